"""The GL stage on a real context: shader math against numpy, identity, ping-pong, hot reload, #line errors,
async readback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.errors import SetupError
from engine.gl import Pipeline, Readback, ShaderProgram, load_shader_source, shader_dir
from engine.params import Fx

W, H = 48, 32


def rgba(seed: int) -> np.ndarray:
    img = np.random.RandomState(seed).randint(0, 256, size=(H, W, 4), dtype=np.uint8)
    img[..., 3] = 255
    return img


def read(fbo) -> np.ndarray:
    return np.frombuffer(fbo.read(components=4, alignment=1), np.uint8).reshape(H, W, 4)


@pytest.fixture
def pipe(gl):
    p = Pipeline(gl, W, H)
    yield p
    p.release()


def test_blend_matches_numpy_formula(pipe):
    a, b = rgba(1), rgba(2)
    alpha = 0.3
    pipe.frame.texture.write(a.tobytes())
    pipe.render(Fx(perturb=0.0, feedback=alpha), 0.0)  # first frame: no history, output = a
    assert np.array_equal(read(pipe.output.fbo), a)
    pipe.frame.texture.write(b.tobytes())
    pipe.render(Fx(perturb=0.0, feedback=alpha), 0.0)
    # Seed 001's formula: alpha * previous + (1 - alpha) * current.
    expected = alpha * a.astype(np.float64) + (1 - alpha) * b.astype(np.float64)
    got = read(pipe.output.fbo).astype(np.float64)
    assert np.abs(got[..., :3] - expected[..., :3]).max() <= 1.0  # within 1/255


def test_perturb_amount_zero_is_identity(gl, pipe):
    img = rgba(3)
    pipe.frame.texture.write(img.tobytes())
    prog = pipe.programs["perturb"]
    from engine.gl import Target

    target = Target(gl, (W, H), "f1")
    prog.draw(target.fbo, {"src": pipe.frame.texture}, amount=0.0, scale=4.0, speed=1.0, displace=0.5,
              brightness_jitter=1.0, hue_jitter=1.0, time=12.3, aspect=W / H)
    assert np.array_equal(read(target.fbo), img)
    # And through the whole pipeline with feedback 0.
    pipe.render(Fx(perturb=0.0, feedback=0.0), 5.0)
    assert np.array_equal(read(pipe.output.fbo), img)
    target.release()


def test_perturb_nonzero_changes_image_and_animates(pipe):
    img = rgba(4)
    pipe.frame.texture.write(img.tobytes())
    outs = []
    for t in (0.0, 0.5):
        pipe.render(Fx(perturb=1.0, feedback=0.0, displace=0.05), t)
        outs.append(read(pipe.output.fbo).astype(int))
    assert np.abs(outs[0] - img).mean() > 1.0
    assert np.abs(outs[0] - outs[1]).mean() > 0.5  # time moves the noise


def test_ping_pong_keeps_previous_frame(pipe):
    frames = [rgba(10), rgba(11), rgba(12)]
    pipe.frame.texture.write(frames[0].tobytes())
    pipe.render(Fx(feedback=0.0), 0.0)
    first = pipe.previous
    pipe.frame.texture.write(frames[1].tobytes())
    pipe.render(Fx(feedback=0.0), 0.0)
    assert pipe.previous is not first  # references swapped, not copied
    # feedback = 1 keeps the previous output exactly, whatever the new frame is
    pipe.frame.texture.write(frames[2].tobytes())
    pipe.render(Fx(feedback=1.0), 0.0)
    assert np.array_equal(read(pipe.output.fbo), frames[1])


def copy_shaders(tmp_path: Path) -> Path:
    d = tmp_path / "shaders"
    shutil.copytree(shader_dir(), d)
    return d


def test_compile_error_names_file_and_line(gl, tmp_path):
    d = copy_shaders(tmp_path)
    src = (d / "blend.frag").read_text().splitlines()
    line = next(i for i, s in enumerate(src) if "frag = mix" in s)
    src.insert(line + 1, "    this is not glsl;")
    (d / "blend.frag").write_text("\n".join(src) + "\n")
    with pytest.raises(SetupError) as e:
        ShaderProgram(gl, d / "fullscreen.vert", d / "blend.frag")
    assert f"blend.frag:{line + 2}:" in str(e.value)


def test_error_inside_include_points_at_included_file(gl, tmp_path):
    d = copy_shaders(tmp_path)
    common = (d / "common.glsl").read_text().splitlines()
    common.insert(5, "float broken(")  # line 6
    (d / "common.glsl").write_text("\n".join(common) + "\n")
    with pytest.raises(SetupError) as e:
        ShaderProgram(gl, d / "fullscreen.vert", d / "perturb.frag")
    assert "common.glsl:" in str(e.value)
    src = load_shader_source(d / "perturb.frag")
    assert src.files[0].name == "perturb.frag" and src.files[1].name == "common.glsl"


def pipeline_with_own_shaders(gl, tmp_path: Path, seed: int) -> tuple[Pipeline, np.ndarray, Path, str]:
    """A pipeline reading a copy of the shaders (to edit), its frame texture holding rgba(seed); returns the pipeline,
    that image, the copied blend.frag and its original text."""
    d = copy_shaders(tmp_path)
    p = Pipeline(gl, W, H, shaders=d)
    img = rgba(seed)
    p.frame.texture.write(img.tobytes())
    blend = d / "blend.frag"
    return p, img, blend, blend.read_text()


def rewrite_and_reload(pipeline: Pipeline, path: Path, data: bytes) -> None:
    """Replace a shader file and make the pipeline look now (its stat check runs at most twice a second)."""
    path.write_bytes(data)
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 2))  # mtime resolution can be coarse
    pipeline.programs[path.stem]._next_check = 0.0
    pipeline.reload_changed()


def test_hot_reload_swaps_good_and_keeps_last_good_on_error(gl, tmp_path):
    p, img, blend, original = pipeline_with_own_shaders(gl, tmp_path, seed=5)

    def touch_and_reload(text: str) -> None:
        rewrite_and_reload(p, blend, text.encode())

    # A good edit: output inverted.
    touch_and_reload(original.replace("frag = mix(", "frag = vec4(1.0) - mix(").replace("alpha);", "alpha); frag.a = 1.0;"))
    assert p.programs["blend"].reloads == 1
    p.render(Fx(feedback=0.0), 0.0)
    assert np.array_equal(read(p.output.fbo)[..., :3], 255 - img[..., :3])
    # A broken edit: the inverted program stays, the error is reported with file:line.
    touch_and_reload(original.replace("uniform float alpha;", "uniform float alpha"))
    assert p.programs["blend"].reloads == 1
    assert "blend.frag:" in (p.shader_errors().get("blend") or "")
    p.render(Fx(feedback=0.0), 0.0)
    assert np.array_equal(read(p.output.fbo)[..., :3], 255 - img[..., :3])
    p.release()


def test_hot_reload_survives_binary_files_nul_bytes_and_retyped_uniforms(gl, tmp_path):
    """Issue 17: a shader of random bytes, and one that compiles but declares a known uniform with another type, used
    to crash the show (UnicodeDecodeError; TypeError in draw). Both keep the last good program and say why."""
    p, img, blend, original = pipeline_with_own_shaders(gl, tmp_path, seed=6)
    p.render(Fx(feedback=0.0), 0.0)
    good = read(p.output.fbo).copy()

    def swap(data: bytes) -> str:
        rewrite_and_reload(p, blend, data)
        p.render(Fx(feedback=0.3, perturb=0.2), 0.5)  # every uniform set: nothing may raise
        return p.shader_errors().get("blend") or ""

    rng = np.random.default_rng(17)
    assert "not a text file" in swap(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert swap(original.replace("void main", "\x00void main").encode())  # GL stops reading at the NUL: no main()
    retyped = original.replace("uniform float alpha;", "uniform vec3 alpha;").replace("alpha);", "alpha.x);")
    error = swap(retyped.encode())
    line = 1 + retyped.splitlines().index("uniform vec3 alpha;")
    assert f"blend.frag:{line}: uniform alpha is declared as vec3; the engine sets it as a float" in error, error
    assert p.programs["blend"].reloads == 0
    p.render(Fx(feedback=0.0), 0.0)
    assert np.array_equal(read(p.output.fbo), good)  # still the original program
    swap(original.encode())
    assert p.programs["blend"].reloads == 1 and not p.shader_errors()
    p.release()


def test_a_retyped_uniform_at_start_is_a_setup_error(gl, tmp_path):
    d = copy_shaders(tmp_path)
    present = d / "present.frag"
    present.write_text(present.read_text().replace("uniform bool flip_y;", "uniform float flip_y;").replace("flip_y ?", "flip_y > 0.5 ?"))
    with pytest.raises(SetupError, match="uniform flip_y is declared as float; the engine sets it as a bool"):
        Pipeline(gl, W, H, shaders=d)


def test_readback_is_one_frame_late_and_flushes(gl, pipe):
    rb = Readback(gl, W, H)
    a, b = rgba(20), rgba(21)
    pipe.frame.texture.write(a.tobytes())
    pipe.render(Fx(feedback=0.0), 0.0)
    assert rb.submit(pipe.output.fbo, 0) is None
    pipe.frame.texture.write(b.tobytes())
    pipe.render(Fx(feedback=0.0), 0.0)
    index, pixels = rb.submit(pipe.output.fbo, 1)
    assert index == 0 and np.array_equal(pixels, a)
    rest = rb.flush()
    assert [i for i, _ in rest] == [1] and np.array_equal(rest[0][1], b)
    assert rb.flush() == []
    rb.release()


def test_shader_dir_has_every_stage():
    d = shader_dir()
    for name in ("fullscreen.vert", "perturb.frag", "blend.frag", "present.frag", "common.glsl"):
        assert (d / name).is_file()
