"""One seed formula: the values every seeded choice used before it was shared are unchanged."""

import zlib

from smc_hf.core.calibration import calibration_seed
from smc_hf.core.seeds import derived_seed


def test_derived_seeds_keep_their_values():
    assert derived_seed(0, 0) == 0
    assert derived_seed(7, 3) == 7 * 1000003 + 3
    assert derived_seed(2**32 - 1, 5) == (2**32 - 1) * 1000003 + 5  # the largest mask_seed: no wrap-around
    assert derived_seed(-1, 0) == 2**63 - 1000003  # always a seed torch accepts
    assert calibration_seed(42, 2, 5) == 42 * 1000003 + 2 * 1009 + 5
    name = "encoder.layer.0.weight"
    assert derived_seed(3, zlib.crc32(name.encode()) * 131 + 4) == (3 * 1000003 + zlib.crc32(name.encode()) * 131 + 4) % 2**63
