"""The sections of ``benchmarks.gpu_check``: decoding with ``nvdec``, training at realistic shapes,
and the released families' processors; ``carry`` builds what the GPU machine lacks."""
