"""Adapters to other libraries' ways of holding weights: distributed placements (DDP/FSDP/DeepSpeed) and PEFT."""
