"""The GPU battery (``make gpu-check``, ``python -m bench.gpu.check``): CPU/CUDA agreement
(:mod:`.sections`), timings (:mod:`.timing`) and its report (:mod:`.report`)."""
