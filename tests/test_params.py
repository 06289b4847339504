"""The parameter object: validation, latest-wins thread safety, snapshots that never change under the reader,
and the TOML config file."""

from __future__ import annotations

import threading

import pytest

from engine.config import load_config
from engine.errors import UsageError
from engine.params import SPECS, ParamError, ParamStore, spec_for


def test_every_param_has_doc_address_and_a_valid_default():
    assert SPECS
    for s in SPECS:
        assert s.doc, s.path
        assert s.address == f"/engine/{s.group}/{s.name}"
        assert s.coerce(s.default) == s.default  # defaults pass their own validation


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("latent.psi", float("nan"), "not a finite number"),
        ("latent.psi", float("inf"), "not a finite number"),
        ("fx.feedback", 1.5, "above the maximum"),
        ("fx.feedback", -0.1, "below the minimum"),
        ("latent.noise_mode", "loud", "not one of"),
        ("latent.seed", "abc", "not a number"),
        ("latent.seed", [1, 2], "expected a number"),
        ("nope.nothing", 1, "unknown parameter"),
        # Finite but beyond float32 use: psi = 1e39 once overflowed torch's lerp mid-show.
        ("latent.psi", 1e39, "above the maximum 1e\\+06"),
        ("stylegan.rotate", -1e7, "below the minimum"),
        ("latent.z", [0.0] * 511 + [1e39], "within"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(path, value, message):
    store = ParamStore()
    before = store.snapshot()
    with pytest.raises(ParamError, match=message):
        store.set(path, value)
    assert store.snapshot() is before  # nothing changed


def test_coercions_for_control_surfaces():
    store = ParamStore()
    assert store.set("latent.seed", 3.6) == 4  # TouchDesigner sends floats only
    assert store.set("/engine/latent/noise_mode", 2) == "none"  # enum by index
    assert store.set("latent.psi", -3) == -3.0  # psi is not clamped
    assert store.set("latent.z", [0.5] * 512) == tuple([0.5] * 512)
    with pytest.raises(ParamError, match="index"):
        store.set("latent.noise_mode", 1.5)
    # One rounding everywhere (OSC, config, mappings): halves go up, not to the even neighbour.
    assert store.set("diffusion.steps", 2.5) == 3
    assert store.set("diffusion.steps", 3.5) == 4
    assert store.set("latent.psi", 250_000.0) == 250_000.0  # huge, but not clamped


def test_update_is_all_or_nothing():
    store = ParamStore()
    with pytest.raises(ParamError):
        store.update({"latent.psi": 0.5, "fx.feedback": 9})
    assert store.get("latent.psi") == 1.0


def test_snapshot_is_immutable_and_latest_value_wins_across_threads():
    store = ParamStore()
    snap = store.snapshot()
    with pytest.raises(Exception):
        snap.latent.psi = 2.0  # frozen

    def writer(k: int) -> None:
        for i in range(200):
            store.set("latent.psi", k * 1000 + i)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert snap.latent.psi == 1.0  # the old snapshot never changed
    final = store.get("latent.psi")
    assert final in {k * 1000 + 199 for k in range(4)}
    assert store.version == 800


def test_range_text_and_spec_lookup():
    assert spec_for("/engine/fx/feedback").range_text() == "0..1"
    assert spec_for("latent.psi").range_text() == "-1e6..1e6"
    assert spec_for("latent.noise_mode").range_text() == "const|random|none"


def test_config_file_sets_run_options_generator_options_and_params(tmp_path):
    p = tmp_path / "show.toml"
    p.write_text('[run]\nsize = 128\nsink = ["null"]\n\n[generator]\nchannel_max = 64\n\n[latent]\nseed = 7\npsi = 0.5\n\n[fx]\nfeedback = 0.25\n')
    cfg = load_config(p, {"size", "sink"})
    assert cfg.run == {"size": 128, "sink": ["null"]}
    assert cfg.generator == {"channel_max": 64}
    assert cfg.params == {"latent.seed": 7, "latent.psi": 0.5, "fx.feedback": 0.25}


@pytest.mark.parametrize(
    "text,message",
    [
        ("[run]\nsizee = 3\n", "unknown option 'sizee'"),
        ("[latent]\npsi = 'x'\n", r"\[latent\] latent.psi: 'x' is not a number"),
        ("[fx]\nfeedback = 3.0\n", "above the maximum"),
        ("[lighting]\nx = 1\n", r"unknown table \[lighting\]"),
        ("[run\n", "invalid TOML"),
        ("seed = 3\n", "must be a table"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(UsageError, match=message) as e:
        load_config(p, {"size"})
    assert str(p) in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(UsageError, match="config file not found"):
        load_config(tmp_path / "nope.toml", set())
