"""Training: overfitting, exact resume, DDP on two CPU ranks, and the `starmd train` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mdtraj as md
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from openmm_starmd.cli import main
from openmm_starmd.data.dataset import TrajectoryWindows, collate_windows
from openmm_starmd.errors import StarMDError
from openmm_starmd.model.checkpoint import load_model, load_tensors, save_tensors
from openmm_starmd.model.config import preset
from openmm_starmd.train.batches import BatchSampler
from openmm_starmd.train.run import build_datasets, held_out_systems, initial_model
from openmm_starmd.train.trainer import Trainer, TrainOptions

DATA = Path(__file__).parent / "data"


def two_windows(atlas: Path) -> list[dict]:
    ds = TrajectoryWindows([atlas], window=preset("tiny").window, max_stride=1, seed=0)
    return [ds[0], ds[1]]


def test_tiny_preset_overfits_two_windows(atlas, tmp_path):
    items = two_windows(atlas)
    opts = TrainOptions(steps=OVERFIT_STEPS, batch_size=2, lr=OVERFIT_LR, warmup_steps=20, val_every=10**9,
                        val_batches=4, checkpoint_every=10**9, progress=False)
    trainer = Trainer(preset("tiny"), items, items, tmp_path / "m", opts, collate_windows)
    before = trainer.validation_loss(use_ema=False)
    trainer.fit()
    after = trainer.validation_loss(use_ema=False)
    assert after < before / OVERFIT_FACTOR, (before, after)


def test_resume_continues_exactly(atlas, tmp_path):
    items = two_windows(atlas)
    opts = TrainOptions(steps=4, batch_size=2, lr=1e-3, warmup_steps=2, val_every=10**9, checkpoint_every=10**9,
                        progress=False)
    straight = Trainer(preset("tiny"), items, None, tmp_path / "a", opts, collate_windows)
    straight.fit()
    interrupted = Trainer(preset("tiny"), items, None, tmp_path / "b", opts, collate_windows)
    interrupted.train_step()
    interrupted.train_step()
    interrupted.save()  # as the periodic checkpoint would; then the process "dies"
    resumed = Trainer(preset("tiny"), items, None, tmp_path / "b", opts, collate_windows, resume=True)
    assert resumed.step == 2
    resumed.fit()
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "b" / "train" / "state.json").read_text())["step"] == 4


def test_batches_same_with_workers_and_from_any_start(atlas):
    # 3 items per epoch and batches of 2: the four batches cross two epoch boundaries
    ds = TrajectoryWindows([atlas], window=4, seed=0, items_per_epoch=3)
    inline = BatchSampler(ds, 2, seed=5, collate=collate_windows)
    batches = [inline.next() for _ in range(4)]
    workers = BatchSampler(ds, 2, seed=5, collate=collate_windows, workers=2)
    for want in batches:
        got = workers.next()
        assert torch.equal(got["start_frame"], want["start_frame"])
        assert torch.equal(got["translations"], want["translations"])
    resumed = BatchSampler(ds, 2, seed=5, collate=collate_windows, start=2)
    assert torch.equal(resumed.next()["translations"], batches[2]["translations"])
    other = BatchSampler(ds, 2, seed=6, collate=collate_windows)
    assert not all(torch.equal(other.next()["translations"], b["translations"]) for b in batches[:2])
    # items of one index differ between epochs (the epoch travels with the index to the workers)
    keys = inline.keys(0) + inline.keys(1)
    assert {epoch for epoch, _ in keys} == {0, 1}


def _ddp_worker(rank: int, world: int, init_file: str, atlas: str, out: str, result: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        items = TrajectoryWindows([atlas], window=preset("tiny").window, max_stride=2, seed=0)
        opts = TrainOptions(steps=3, batch_size=1, lr=1e-3, warmup_steps=1, val_every=10**9,
                            checkpoint_every=10**9, progress=False)
        trainer = Trainer(preset("tiny"), items, None, out, opts, collate_windows, device="cpu")
        first = trainer.sampler.next()  # each rank must draw its own windows
        trainer.fit()
        weights = dict(trainer.net.state_dict())
        weights["first_start"] = first["start_frame"]
        save_tensors(f"{result}/rank{rank}.safetensors", weights)
    finally:
        dist.destroy_process_group()


def test_ddp_two_cpu_ranks_end_with_identical_weights(atlas, tmp_path):
    (tmp_path / "res").mkdir()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(atlas), str(tmp_path / "m"), str(tmp_path / "res")),
             nprocs=2, join=True)
    w0 = load_tensors(tmp_path / "res" / "rank0.safetensors")
    w1 = load_tensors(tmp_path / "res" / "rank1.safetensors")
    assert not torch.equal(w0.pop("first_start"), w1.pop("first_start"))  # different data per rank
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    init = preset("tiny")
    torch.manual_seed(0)
    from openmm_starmd.model.network import StarMDNetwork

    fresh = StarMDNetwork(init).state_dict()
    assert any(not torch.equal(fresh[k], w0[k]) for k in fresh)  # training did move the weights
    assert (tmp_path / "m" / "model.safetensors").exists()  # rank 0 wrote the checkpoint


def test_cli_train_resume_and_errors(atlas, tmp_path, capsys):
    out = tmp_path / "model"
    args = ["train", str(atlas), "-o", str(out), "--preset", "tiny", "--steps", "3", "--batch-size", "1",
            "--threads", "1", "--val-every", "2"]
    assert main(args) == 0
    model, cfg = load_model(out)
    assert cfg == preset("tiny") and model.config == cfg
    state = json.loads((out / "train" / "state.json").read_text())
    assert state["step"] == 3 and any("val_loss" in h for h in state["history"])
    assert main(args) == 2  # existing folder, no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main([*args[:7], "5", *args[8:], "--resume", "--workers", "1"]) == 0  # resumed with a loader process
    assert json.loads((out / "train" / "state.json").read_text())["step"] == 5
    assert main([*args, "--overwrite", "--workers", "-1"]) == 2
    assert "workers must be 0 or more" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nothing"), "-o", str(tmp_path / "x"), "--steps", "1"]) == 2


def test_fine_tuning_from_the_default_lowers_the_loss_and_keeps_its_config(atlas, tmp_path):
    config, weights, record = initial_model("default", None, None)
    items = TrajectoryWindows([atlas], window=config.window, seed=3)
    items = [items[0], items[1]]
    # Measured: 40 steps at 3e-4 take the loss on these two windows from 0.456 to 0.358.
    opts = TrainOptions(steps=40, batch_size=2, lr=3e-4, warmup_steps=1, val_every=10**9, val_batches=8,
                        checkpoint_every=10**9, progress=False)
    trainer = Trainer(config, items, items, tmp_path / "ft", opts, collate_windows, init_weights=weights,
                      record={"init": record})
    assert all(torch.equal(v, weights[k]) for k, v in trainer.net.state_dict().items())  # really started there
    before = trainer.validation_loss(use_ema=False)
    trainer.fit()
    assert trainer.validation_loss(use_ema=False) < 0.9 * before
    model, saved = load_model(tmp_path / "ft")
    assert saved == config and model.config == config
    meta = json.loads((tmp_path / "ft" / "model.json").read_text())["metadata"]
    assert meta["init"]["path"] == "default" and meta["init"]["step"] == record["step"]
    assert len(meta["init"]["sha256"]) == 64


def test_cli_init_keeps_the_checkpoint_config_and_rejects_conflicts(atlas, tmp_path, capsys):
    base = tmp_path / "base"
    common = ["--steps", "2", "--batch-size", "1", "--threads", "1", "--val-fraction", "0"]
    assert main(["train", str(atlas), "-o", str(base), "--preset", "tiny", "--window", "3", *common]) == 0
    tuned = tmp_path / "tuned"
    assert main(["train", str(atlas), "-o", str(tuned), "--init", str(base), *common]) == 0
    _, cfg = load_model(tuned)
    assert cfg == preset("tiny", window=3)  # not the small default preset
    init = json.loads((tuned / "model.json").read_text())["metadata"]["init"]
    assert init["path"] == str(base.resolve()) and init["step"] == 2
    assert json.loads((tuned / "train" / "state.json").read_text())["record"]["init"] == init
    # --window changes the history of the fine-tuned model (its weights do not depend on it)
    shorter = tmp_path / "shorter"
    assert main(["train", str(atlas), "-o", str(shorter), "--init", str(base), "--window", "2", *common]) == 0
    assert load_model(shorter)[1] == preset("tiny", window=2)
    capsys.readouterr()
    for extra, message in ((["--init", "default", "--preset", "tiny"], "--preset tiny contradicts"),
                           (["--init", str(base), "--window", "1"], "window must be at least 2"),
                           (["--init", str(tmp_path / "missing")], "missing not found: give a STAR-MD")):
        assert main(["train", str(atlas), "-o", str(tmp_path / "bad"), *extra, *common]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert not (tmp_path / "bad").exists()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, atlas) -> Path:
    """Two systems: CLN (chignolin) and AMRV (a tetrapeptide), ATLAS layout."""
    root = tmp_path_factory.mktemp("corpus")
    for name, source in (("CLN", "cln025"), ("AMRV", "amrv")):
        (root / name).mkdir()
        shutil.copy(DATA / f"{source}.pdb", root / name / f"{name}.pdb")
        shutil.copy(DATA / f"{source}_3ns.xtc", root / name / f"{name}_R1.xtc")
    return root


def test_held_out_systems_are_named_or_drawn_reproducibly():
    names = [f"S{i:02d}" for i in range(20)]
    drawn = held_out_systems(names, fraction=0.2, seed=3)
    assert len(drawn) == 4 and drawn == held_out_systems(names, fraction=0.2, seed=3)
    assert drawn != held_out_systems(names, fraction=0.2, seed=4)
    both = held_out_systems(names, ["S07"], fraction=0.1, seed=3)
    assert "S07" in both and len(both) == 3
    with pytest.raises(StarMDError, match=r"unknown system.*NOPE"):
        held_out_systems(names, ["NOPE"])
    with pytest.raises(StarMDError, match="none to train on"):
        held_out_systems(names[:2], ["S00", "S01"])


def test_held_out_systems_are_never_trained_on_and_the_time_split_does_not_overlap(corpus):
    train, val, unseen, held = build_datasets([corpus], window=4, val_fraction=0.1, val_systems=["AMRV"])
    assert held == ["AMRV"] and train.names == val.names == ["CLN"] and unseen.names == ["AMRV"]
    cut = 270  # 300 frames, the last 10 % held out
    for i in range(20):
        item = train[i]
        assert int(item["start_frame"]) + 3 * int(item["stride"]) < cut
    assert all(int(val[i]["start_frame"]) >= cut for i in range(len(val)))


def test_cli_val_systems_reports_unseen_loss_and_records_the_split(corpus, tmp_path, capsys):
    out = tmp_path / "m"
    args = ["train", str(corpus), "-o", str(out), "--preset", "tiny", "--steps", "2", "--batch-size", "2",
            "--threads", "1", "--val-every", "2", "--val-systems", "AMRV"]
    assert main(args) == 0
    assert "unseen-system loss" in capsys.readouterr().out
    state = json.loads((out / "train" / "state.json").read_text())
    assert state["record"]["held_out_systems"] == ["AMRV"]
    assert json.loads((out / "model.json").read_text())["metadata"]["held_out_systems"] == ["AMRV"]
    last = state["history"][-1]
    assert {"val_loss", "unseen_loss"} <= set(last) and last["val_loss"] != last["unseen_loss"]
    assert main([*args[:-1], "CLN,AMRV", "--overwrite"]) == 2
    assert "none to train on" in capsys.readouterr().err


# Measured: 600 steps give ~7x, 800 ~9.5x, 1000 ~11-12x (the rotation score must be memorised at every τ).
OVERFIT_STEPS = 1000
OVERFIT_LR = 5e-3
OVERFIT_FACTOR = 10.0


def test_dt_range_limits_the_training_windows_only(corpus, tmp_path, capsys):
    train, val, _, _ = build_datasets([corpus], window=4, val_fraction=0.2, dt_range_ps=(100.0, 200.0))
    train_dts = {float(train[i]["dt_ps"]) for i in range(40)}
    assert min(train_dts) >= 100.0 and max(train_dts) <= 200.0 and len(train_dts) > 1
    assert min(float(val[i]["dt_ps"]) for i in range(len(val))) < 100.0  # validation keeps every Δt
    base = ["train", str(corpus), "--preset", "tiny", "--steps", "1", "--batch-size", "1", "--threads", "1"]
    assert main([*base, "-o", str(tmp_path / "bad"), "--dt-range", "1ns", "100ps"]) == 2
    assert "--dt-range needs 0 < LOW <= HIGH" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "bad"), "--dt-range", "100", "1ns"]) == 2
    assert "cannot read --dt-range" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main([*base, "-o", str(tmp_path / "m"), "--dt-range", "0.1ns", "1us"]) == 0
    assert json.loads((tmp_path / "m" / "model.json").read_text())["metadata"]["dt_range_ps"] == [100.0, 1e6]
    assert "left out of training" not in capsys.readouterr().err


def test_dt_range_names_the_trajectories_it_leaves_out(corpus, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(corpus, mixed)
    short = md.load(str(mixed / "AMRV" / "AMRV_R1.xtc"), top=str(mixed / "AMRV" / "AMRV.pdb"))[:100]
    short.save_xtc(str(mixed / "AMRV" / "AMRV_R1.xtc"))  # 1 ns: no 4-frame window 400 ps apart
    args = ["train", str(mixed), "-o", str(tmp_path / "m"), "--preset", "tiny", "--steps", "1", "--batch-size", "1",
            "--threads", "1", "--dt-range", "400ps", "1us"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 trajectories hold no training window" in err and "AMRV" in err and "CLN" not in err
