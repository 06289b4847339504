"""TensorRT engines for a generator's modules, built from outside the generator (generators stay plain PyTorch).

    record   one frame is rendered with recorders on Generator.modules() (e.g. mapping, synthesis; unet,
             vae_encoder, vae_decoder): each module's call signature (tensor shapes and dtypes, the Python values
             passed with them) and its eager outputs.                                         (record.py)
    export   each signature becomes an ONNX graph with the Python values baked in and the tensors as inputs
             in0..inN, outputs out0..outM (torch.onnx, dynamo exporter); checked against the eager outputs with
             ONNX Runtime when it is installed.                                                (onnx_export.py)
    build    TensorRT builds a serialized engine ("plan") from the ONNX graph at those fixed shapes, in the chosen
             precision, with a progress bar and a timing cache.                               (builder.py)
    cache    ONNX files and plans are kept under a folder keyed by everything that changes them: the module's
             weights (content hash), class, call signature, precision, torch/ONNX/TensorRT versions and the GPU
             (name and compute capability). A changed input rebuilds; nothing stale is ever loaded. (cache.py)

`engine trt` runs these ahead of a show; `engine run --backend tensorrt` (engine/backends/tensorrt.py) loads the
plans, building any that are missing at setup, and runs them on torch's current CUDA stream.

TensorRT itself is imported only inside builder.py and the runner, never at module level: everything up to the ONNX
graph works (and is tested) without it.
"""
