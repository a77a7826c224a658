"""The one training engine of MM-LDM (see docs/training.md).

``stage`` (the protocol a stage implements), ``config`` (``TrainConfig``),
``engine`` (``Trainer``), ``registry`` (stage names), ``checkpoint``, ``ema``,
``data`` (sharded epoch order). Kept import-free so that stage configs can use
``mmldm.training.config`` without loading Accelerate.
"""
