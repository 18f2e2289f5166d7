"""Statistics over several processes (issue 22, item 6): 2 gloo processes, each fitting its own shard,
end with the statistics of the union, as one process on the union computes them."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import pgu
from pgu.distributed import DistributedMismatchError

WORLD = 2


def _model(seed=0, width=6):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                          nn.Conv2d(width, 8, 3, stride=2, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 3 * 3, 4))
    model.eval()
    return model


def _data(n=90):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def _worker(rank, world, folder, case):
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        x, y = _data()
        model = _model(width=6 if case != "mismatch" or rank == 0 else 8)
        if case == "empty":
            ids = torch.arange(len(y)) if rank == 0 else torch.arange(0)
        else:
            ids = torch.arange(rank, len(y), world)  # a strided shard, as DistributedSampler deals them
        batches = [(x[ids[i:i + 16]], y[ids[i:i + 16]]) for i in range(0, len(ids), 16)]
        precision = "float64" if case == "float64" else "auto"
        try:
            stats = pgu.GramStats(precision=precision).fit(model, batches)
        except DistributedMismatchError as exc:
            open(f"{folder}/mismatch-{rank}", "w").write(str(exc))
            return
        stats.save(f"{folder}/stats-{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def _request_inputs():
    """A trained-ish model, its statistics on all of the data, D_f (class 1) in batches of 12, and val."""
    x, y = _data(120)
    model = _model()
    stats = pgu.GramStats().fit(model, [(x, y)], distributed=False)
    forget = (y == 1).nonzero().flatten()
    batches = [(x[forget[i:i + 12]], y[forget[i:i + 12]]) for i in range(0, len(forget), 12)]
    return model, stats, batches, [(x[:40], y[:40])]


def _request(batches, stats, model, val, **kw):
    return pgu.unlearn(model, batches, stats, val_loader=val, mode="class", epochs=4, lr=(0.5, 0.1),
                       momentum=0.9, **kw)


def _unlearn_worker(rank, world, folder):
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model, stats, batches, val = _request_inputs()
        shares = [(bx[rank::world], by[rank::world]) for bx, by in batches]  # this rank's share of every batch
        if rank == 1:
            shares = shares[:-1] if len(shares[-1][1]) else shares  # a loader spent early still takes part
        result = _request(shares, stats, model, val)
        if rank == 0:
            import json

            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, f"{folder}/model.safetensors")
            (open(f"{folder}/result.json", "w")).write(json.dumps(
                {"history": result.history, "stop": result.stop_reason, "ranks": result.cgs.rank_,
                 "n_forget": result.forget_stats.n_samples_}))
    finally:
        dist.destroy_process_group()


def test_a_request_in_two_processes_gives_the_model_of_one(tmp_path):
    import json

    from safetensors.torch import load_file

    model, stats, batches, val = _request_inputs()
    # the single process sees what the two ranks see together, batch for batch (rank 1 skips its last share)
    merged = [(bx, by) for bx, by in batches]
    last_x, last_y = merged[-1]
    merged[-1] = (last_x[0::2], last_y[0::2])
    if len(batches[-1][1][1::2]) == 0:
        merged[-1] = batches[-1]
    single = _request(merged, stats, model, val)
    mp.start_processes(_unlearn_worker, args=(WORLD, str(tmp_path)), nprocs=WORLD, join=True, start_method="spawn")
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["stop"] == single.stop_reason and record["ranks"] == single.cgs.rank_
    assert record["n_forget"] == single.forget_stats.n_samples_
    assert [h["forget_acc"] for h in record["history"]] == pytest.approx([h["forget_acc"] for h in single.history])
    weights = load_file(tmp_path / "model.safetensors")
    for name, value in single.model.state_dict().items():
        assert torch.allclose(weights[name], value, atol=1e-5, rtol=1e-4), name
    assert any(not torch.equal(single.model.state_dict()[k], model.state_dict()[k]) for k in weights)


def _run(tmp_path, case):
    mp.start_processes(_worker, args=(WORLD, str(tmp_path), case), nprocs=WORLD, join=True, start_method="spawn")


def _single_process(precision):
    x, y = _data()
    return pgu.GramStats(precision=precision).fit(_model(), [(x, y)])


@pytest.mark.parametrize("case,tolerance", [("float64", 1e-9), ("auto", 1e-6)])
def test_two_processes_on_shards_equal_one_process_on_the_union(tmp_path, case, tolerance):
    _run(tmp_path, case)
    single = _single_process("float64" if case == "float64" else "auto")
    for rank in range(WORLD):
        stats = pgu.GramStats.load(tmp_path / f"stats-{rank}.safetensors")
        assert stats.n_samples_ == single.n_samples_ == 90
        assert stats.layer_names == single.layer_names
        for name in single.layer_names:
            assert stats.n_rows_[name] == single.n_rows_[name]
            g, ref = stats.gram_[name], single.gram_[name]
            assert float((g - ref).norm() / ref.norm()) <= tolerance, (name, float((g - ref).norm() / ref.norm()))
            s, s_ref = stats.row_sum_[name], single.row_sum_[name]
            assert float((s - s_ref).norm() / s_ref.norm()) <= tolerance


def test_a_rank_with_an_empty_shard_takes_part(tmp_path):
    _run(tmp_path, "empty")
    single = _single_process("auto")
    stats = pgu.GramStats.load(tmp_path / "stats-1.safetensors")  # the rank that read nothing
    assert stats.n_samples_ == 90
    for name in single.layer_names:
        g, ref = stats.gram_[name], single.gram_[name]
        assert float((g - ref).norm() / ref.norm()) <= 1e-6


def test_ranks_with_different_models_are_refused_on_every_rank(tmp_path):
    _run(tmp_path, "mismatch")
    for rank in range(WORLD):
        message = (tmp_path / f"mismatch-{rank}").read_text()
        assert "disagree on the layers" in message


def test_without_a_process_group_nothing_is_reduced_and_true_is_refused():
    x, y = _data(20)
    assert pgu.GramStats().fit(_model(), [(x, y)]).n_samples_ == 20
    with pytest.raises(RuntimeError, match="torchrun"):
        pgu.GramStats().fit(_model(), [(x, y)], distributed=True)
    assert not dist.is_initialized() and "RANK" not in os.environ


def test_torchrun_trains_data_parallel_to_the_single_process_accuracy(tmp_path):
    """`torchrun --nproc_per_node=2 -m pgu train` (gloo): each rank its share of every batch, gradients summed;
    the run has the statistics of every training sample and the accuracy one process reaches."""
    import subprocess
    import sys

    from pgu.zoo.runs import load_run

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "pgu", "train", "--dataset", "digits", "--epochs", "6", "--quiet"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--standalone", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("wrote ") == 1  # rank 0 reports
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=300, env=env, cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    runs = {name: load_run(tmp_path / name) for name in ("one", "two")}
    results = {name: run.config["results"] for name, run in runs.items()}
    assert results["two"]["samples_seen"] == results["one"]["samples_seen"]
    assert abs(results["two"]["val_acc"] - results["one"]["val_acc"]) <= 3.0, results
    assert runs["two"].load_stats().n_samples_ == runs["one"].config["dataset"]["trained_on"]


class _TokenConv(nn.Module):
    """An embedding (diagonal Gram), a grouped Conv1d (a stack of Grams) and a Linear: every basis kind."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1, groups=4)
        self.head = nn.Linear(8, 3)

    def forward(self, t):
        return self.head(self.conv(self.emb(t).transpose(1, 2)).mean(2))


def _cgs_worker(rank, world, folder):
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        from safetensors.torch import save_file

        torch.manual_seed(0)
        stats = pgu.GramStats().fit(_TokenConv(), [torch.randint(0, 50, (40, 10))], distributed=False)
        cgs = pgu.CoreGradientSpace(threshold=0.8).fit(stats)  # layers dealt round-robin, bases broadcast
        save_file({n: b.contiguous() for n, b in cgs.basis_.items()}, f"{folder}/cgs-{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_every_basis_kind_is_dealt_and_broadcast_as_one_process_computes_it(tmp_path):
    from safetensors.torch import load_file

    mp.start_processes(_cgs_worker, args=(WORLD, str(tmp_path)), nprocs=WORLD, join=True, start_method="spawn")
    torch.manual_seed(0)
    stats = pgu.GramStats().fit(_TokenConv(), [torch.randint(0, 50, (40, 10))])
    single = pgu.CoreGradientSpace(threshold=0.8).fit(stats)
    assert single.basis_["emb"].dim() == 1 and single.basis_["conv"].dim() == 3
    for rank in range(WORLD):
        bases = load_file(tmp_path / f"cgs-{rank}.safetensors")
        for name, basis in single.basis_.items():
            assert torch.equal(bases[name], basis), (rank, name)
