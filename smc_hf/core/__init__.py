"""Plain torch: parameter selection, `MaskSet`, allocation, criteria, schedules, calibration, Fisher, reports."""
