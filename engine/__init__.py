"""engine: a real-time, GPU-native render engine for live visuals.

Frame path, one module per stage:
    control (OSC, thermal, mappings) -> params -> source -> generator -> upload/interop -> shaders (gl) -> sinks

The repository's top-level folders kernels/ (Triton kernels) and trt_build/ (TensorRT engines) are imported as
engine.kernels and engine.trt_build: `engine` is the distribution's only top-level import name. A bare `kernels`
would collide with Hugging Face's PyPI package of that name, which transformers 5 requires, in both directions
(ours shadowing theirs from the repository root, theirs shadowing ours from site-packages). A wheel carries both
folders inside the package (pyproject.toml); in a source tree (a clone, an editable install) they are attached
below. Neither folder has an __init__.py, so from the repository root `import kernels` still finds Hugging Face's
package: a regular package anywhere on sys.path wins over a folder without one.
"""

__version__ = "0.1.0"

#: Repository folders imported as subpackages of engine (engine.kernels, engine.trt_build).
REPOSITORY_SUBPACKAGES = ("kernels", "trt_build")


def _attach_repository_folders() -> None:
    import sys
    from importlib.machinery import ModuleSpec
    from importlib.util import module_from_spec
    from pathlib import Path

    package = Path(__file__).resolve().parent
    for name in REPOSITORY_SUBPACKAGES:
        folder = package.parent / name
        if (package / name).is_dir() or not folder.is_dir():
            continue  # installed from a wheel: an ordinary subpackage inside engine/
        # A namespace-style package (no __init__ to run) whose submodules are the folder's files.
        spec = ModuleSpec(f"{__name__}.{name}", None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        module = module_from_spec(spec)
        sys.modules[spec.name] = module
        globals()[name] = module


_attach_repository_folders()
