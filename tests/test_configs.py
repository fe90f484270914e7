"""Every experiment composes; the default config composes with every option of every group; CLI help and errors."""

import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.errors import UserError
from src.run import instantiate
from tests.conftest import CONFIG_DIR, ROOT, compose_config

GROUPS = ["data", "model", "loss", "optimizer", "scheduler", "callbacks", "logger", "trainer", "debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def resolve(cfg):
    """Resolve everything but Hydra's own node: a broken interpolation fails here."""
    return {
        key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key != "hydra"
    }


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_composes(name, tmp_path):
    cfg = compose_config("train", [f"experiment={name}"], tmp_path)
    resolve(cfg)
    assert cfg.model._target_ and cfg.data._target_


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_default_composes_with_each_option(group, option, tmp_path):
    cfg = compose_config("train", [f"{group}={option}"], tmp_path)
    resolve(cfg)


def test_eval_config_composes(tmp_path):
    cfg = compose_config("eval", ["ckpt_path=x.ckpt"], tmp_path)
    assert cfg.split == "val" and cfg.get("data") is None


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_help_lists_config_groups():
    out = run_cli("--help")
    assert out.returncode == 0
    for group in ("data", "model", "loss", "experiment"):
        assert f"{group}:" in out.stdout
    assert "synthetic" in out.stdout and "unet_classic" in out.stdout


def test_unknown_option_lists_available_ones(tmp_path):
    out = run_cli("experiment=no_such_experiment", f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0
    assert "Could not find 'experiment/no_such_experiment'" in out.stderr
    assert "Available options in 'experiment'" in out.stderr
    for name in options("experiment"):
        assert name in out.stderr


def test_missing_checkpoint_is_named_without_traceback(tmp_path):
    out = run_cli(f"ckpt_path={tmp_path}/nope.ckpt", f"hydra.run.dir={tmp_path}/run", "extras.print_config=false")
    assert out.returncode == 2
    assert f"ckpt_path={tmp_path}/nope.ckpt: no such checkpoint file" in out.stderr
    assert "Traceback" not in out.stderr


def readme_train_commands() -> list[list[str]]:
    """The overrides of every `python -m src.train ...` line in the README's shell blocks (sweeps expanded)."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "python -m src.train" not in line:
                continue
            args = shlex.split(re.split(r"\s#\s", line.split("python -m src.train", 1)[1])[0])
            if "--help" in args:
                continue
            sweep = "-m" in args
            choices = []
            for arg in args:
                if arg == "-m" or arg.startswith("ckpt_path="):
                    continue
                key, _, value = arg.partition("=")
                if sweep and "," in value and "[" not in value:
                    choices.append([f"{key}={v}" for v in value.split(",")])
                else:
                    choices.append([arg])
            commands += [list(c) for c in itertools.product(*choices)]
    return commands


README_COMMANDS = readme_train_commands()


def test_readme_has_train_commands():
    assert len(README_COMMANDS) > 30


@pytest.mark.parametrize("overrides", README_COMMANDS, ids=lambda o: " ".join(o)[:80] or "default")
def test_every_readme_train_command_composes(overrides, tmp_path):
    """The README stays true: each documented `python -m src.train` command composes and resolves, and its data
    and loss build (only files that a reader brings, such as a class-weight file, may be missing)."""
    cfg = compose_config("train", overrides, tmp_path)
    resolve(cfg)
    for part in ("data", "loss"):
        try:
            instantiate(cfg[part], _convert_="partial")
        except UserError as err:
            assert "no such file" in str(err), err


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.class_names=[a,b]", "data.class_names"),
        ("data.shape_radius=[0.3,0.1]", "data.shape_radius"),
        ("data.shape_probs=[1,1]", "data.shape_probs"),
        ("scheduler.kind=step", "scheduler.kind"),
    ],
)
def test_config_value_mistakes_stop_with_a_message_naming_the_key(override, key, train_cfg):
    from src.train import train

    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        train(train_cfg(override, "debug=fast_dev_run"))
