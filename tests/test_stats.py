"""GramStats against the explicit per-patch oracle, additivity, invariances, persistence, errors."""

import pytest
import torch
from conftest import batches
from torch import nn

from pgu import GramStats, NotFittedError, StatsMismatchError, UnsupportedLayerError
from pgu.gram.layers import adapter_for
from pgu.testing import explicit_gram, explicit_rows


class MyConv(nn.Conv2d):
    """A user subclass: must be found through the class hierarchy."""


CONV_CASES = {
    "plain": dict(in_channels=3, out_channels=4, kernel_size=3),
    "stride2_pad1": dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1),
    "dilation2": dict(in_channels=2, out_channels=3, kernel_size=3, dilation=2, padding=1),
    "same": dict(in_channels=2, out_channels=3, kernel_size=(3, 5), padding="same"),
    "same_even_kernel": dict(in_channels=2, out_channels=3, kernel_size=(2, 4), padding="same"),
    "same_dilated": dict(in_channels=2, out_channels=3, kernel_size=4, padding="same", dilation=2),
    "valid": dict(in_channels=2, out_channels=3, kernel_size=(3, 2), padding="valid"),
    "no_bias_rect_stride": dict(in_channels=3, out_channels=2, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
                                bias=False),
    "reflect": dict(in_channels=2, out_channels=2, kernel_size=3, padding=1, padding_mode="reflect"),
    "circular_stride": dict(in_channels=2, out_channels=2, kernel_size=3, padding=2, stride=3, padding_mode="circular"),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
@pytest.mark.parametrize("cls", [nn.Conv2d, MyConv])
def test_conv_gram_matches_explicit_loop(case, cls):
    layer = cls(**CONV_CASES[case]).double()
    x = torch.randn(3, layer.in_channels, 7, 8, dtype=torch.float64)
    stats = GramStats().fit(layer, batches(x, size=2))
    torch.testing.assert_close(stats.gram_[""], explicit_gram(layer, x), rtol=1e-12, atol=1e-12)
    rows = explicit_rows(layer, x)
    assert stats.n_rows_[""] == rows.shape[0]
    assert stats.n_samples_ == 3
    torch.testing.assert_close(stats.row_sum_[""], rows.sum(0))


@pytest.mark.parametrize("case", list(CONV_CASES))
@pytest.mark.parametrize("route", ["unfold", "rows", "offsets"])
def test_every_conv_gram_route_matches_the_explicit_loop(case, route):
    """Each exact route, forced whatever the cost model would pick (offsets: stride 1 only)."""
    from unittest.mock import patch

    layer = nn.Conv2d(**CONV_CASES[case]).double()
    if route == "offsets" and layer.stride != (1, 1):
        pytest.skip("the offset route is for stride 1")
    x = torch.randn(3, layer.in_channels, 7, 8, dtype=torch.float64)
    with patch("pgu.gram.accumulators.conv2d_gram_route", lambda *a: route):
        stats = GramStats().fit(layer, batches(x, size=2))
    torch.testing.assert_close(stats.gram_[""], explicit_gram(layer, x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.row_sum_[""], explicit_rows(layer, x).sum(0))
    assert stats.n_rows_[""] == explicit_rows(layer, x).shape[0]


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_rows_reproduce_the_layer_output(case):
    """The row order matches weight.reshape(C_out, -1): rows @ W^T + b is the conv output."""
    layer = nn.Conv2d(**CONV_CASES[case]).double()
    x = torch.randn(2, layer.in_channels, 7, 8, dtype=torch.float64)
    rows = adapter_for(layer).rows(layer, x)
    out = rows @ layer.weight.reshape(layer.out_channels, -1).T
    if layer.bias is not None:
        out = out + layer.bias
    expected = layer(x).permute(0, 2, 3, 1).reshape(-1, layer.out_channels)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(rows, explicit_rows(layer, x))


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gram_matches_explicit_loop_with_leading_dims(bias):
    layer = nn.Linear(5, 3, bias=bias).double()
    x = torch.randn(4, 2, 5, dtype=torch.float64)  # extra leading dimension: every vector is a row
    stats = GramStats().fit(layer, batches(x, size=3))
    torch.testing.assert_close(stats.gram_[""], explicit_gram(layer, x))
    assert stats.n_rows_[""] == 8 and stats.n_samples_ == 4


def small_cnn(dtype=torch.float32):
    """Float64 where exact comparisons across batchings are made (float32 forwards differ by batch size)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        MyConv(4, 6, 3, stride=2, padding=1, bias=False), nn.ReLU(), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 10),
    ).to(dtype)


def test_covers_every_weight_layer_including_subclasses_and_skips_frozen():
    model = small_cnn()
    assert GramStats().fit(model, [torch.randn(2, 1, 8, 8)]).layer_names == ["0", "3", "7"]
    model[7].weight.requires_grad_(False)
    assert GramStats().fit(model, [torch.randn(2, 1, 8, 8)]).layer_names == ["0", "3"]


def test_statistics_use_eval_mode_and_restore_modes():
    model = small_cnn()
    model.train()
    model[5].eval()  # a mixed state must come back exactly
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)
    stats = GramStats(["7"]).fit(model, [x])
    assert [m.training for m in model.modules()] == [True, True, True, True, True, True, False, True, True]
    model.eval()
    with torch.no_grad():
        h = model[:7](x).double()
    torch.testing.assert_close(stats.gram_["7"], h.T @ h)


def test_additivity_and_subtraction():
    model = small_cnn(torch.float64)
    a, b = torch.randn(10, 1, 8, 8, dtype=torch.float64), torch.randn(7, 1, 8, 8, dtype=torch.float64)
    fa, fb = GramStats().fit(model, batches(a, size=4)), GramStats().fit(model, batches(b, size=3))
    fab = GramStats().fit(model, batches(torch.cat([a, b]), size=5))
    total = fa + fb
    for n in fab.layer_names:
        torch.testing.assert_close(total.gram_[n], fab.gram_[n], rtol=1e-12, atol=1e-9)
        torch.testing.assert_close((fab - fb).gram_[n], fa.gram_[n], rtol=1e-9, atol=1e-9)
        assert (fab - fb).n_rows_[n] == fa.n_rows_[n]
    assert total.n_samples_ == 17 and (fab - fb).n_samples_ == 10


def test_batch_size_and_order_invariance():
    model = small_cnn(torch.float64)
    x = torch.randn(12, 1, 8, 8, dtype=torch.float64)
    ref = GramStats().fit(model, batches(x, size=12))
    for size, perm in [(1, torch.arange(12)), (5, torch.randperm(12)), (4, torch.arange(11, -1, -1))]:
        other = GramStats().fit(model, batches(x[perm], size=size))
        for n in ref.layer_names:
            torch.testing.assert_close(other.gram_[n], ref.gram_[n], rtol=1e-12, atol=1e-9)


def test_partial_fit_streams_batches():
    model = small_cnn(torch.float64)
    x = torch.randn(9, 1, 8, 8, dtype=torch.float64)
    streamed = GramStats()
    for chunk in batches(x, size=4):
        streamed.partial_fit(model, chunk)
    ref = GramStats().fit(model, [x])
    for n in ref.layer_names:
        torch.testing.assert_close(streamed.gram_[n], ref.gram_[n], rtol=1e-12, atol=1e-9)
    assert streamed.n_samples_ == 9


def test_loader_yielding_tuples_or_bare_inputs_agree():
    model = small_cnn()
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    g1 = GramStats().fit(model, batches(x, y, size=4))
    g2 = GramStats().fit(model, batches(x, size=4))
    torch.testing.assert_close(g1.gram_["0"], g2.gram_["0"])


def test_save_load_round_trip(tmp_path):
    model = small_cnn()
    stats = GramStats().fit(model, [torch.randn(5, 1, 8, 8)])
    stats.save(tmp_path / "s.safetensors", metadata={"model": "small"})
    back = GramStats.load(tmp_path / "s.safetensors")
    assert back.layer_names == stats.layer_names and back.n_samples_ == 5 and back.precision == "auto"
    GramStats(precision="float64").fit(model, [torch.randn(2, 1, 8, 8)]).save(tmp_path / "p.safetensors")
    assert GramStats.load(tmp_path / "p.safetensors").precision == "float64"
    assert back.layer_info_ == stats.layer_info_ and back.n_rows_ == stats.n_rows_
    assert back.metadata_ == {"model": "small"}
    for n in stats.layer_names:
        assert torch.equal(back.gram_[n], stats.gram_[n])
        assert torch.equal(back.row_sum_[n], stats.row_sum_[n])
    back.check_model(model)


def test_load_refuses_foreign_or_damaged_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match="not pgu statistics"):
        GramStats.load(tmp_path / "weights.safetensors")
    stats = GramStats().fit(small_cnn(), [torch.randn(2, 1, 8, 8)])
    stats.save(tmp_path / "s.safetensors")
    raw = (tmp_path / "s.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable"):
        GramStats.load(tmp_path / "cut.safetensors")
    with pytest.raises(FileNotFoundError):
        GramStats.load(tmp_path / "missing.safetensors")


def test_algebra_refuses_mismatched_layers():
    a = GramStats().fit(small_cnn(), [torch.randn(2, 1, 8, 8)])
    other = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 10))
    b = GramStats().fit(other, [torch.randn(2, 1, 8, 8)])
    with pytest.raises(StatsMismatchError, match="different layers"):
        a + b
    c = GramStats(["0"]).fit(nn.Sequential(nn.Conv2d(1, 4, 3, padding=2)), [torch.randn(2, 1, 8, 8)])
    d = GramStats(["0"]).fit(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1)), [torch.randn(2, 1, 8, 8)])
    with pytest.raises(StatsMismatchError, match="padding"):
        c - d
    with pytest.raises(ValueError, match="part of the set"):
        a - (a + a)
    with pytest.raises(TypeError):
        a + 1


def test_check_model_detects_another_architecture():
    stats = GramStats().fit(small_cnn(), [torch.randn(2, 1, 8, 8)])
    other = small_cnn()
    other[7] = nn.Linear(96, 5)
    with pytest.raises(StatsMismatchError, match="another architecture"):
        stats.check_model(other)


def test_bad_inputs_give_clear_errors_and_change_nothing():
    with pytest.raises(UnsupportedLayerError, match="no layer PGU supports"):
        GramStats().fit(nn.Sequential(nn.ReLU(), nn.Tanh()), [torch.randn(2, 3)])
    model = small_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    stats = GramStats()
    with pytest.raises(ValueError, match="failed on a batch of inputs of shape"):
        stats.fit(model, [torch.randn(2, 3, 8, 8)])  # wrong channel count
    assert not stats.is_fitted
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_pre_hooks for m in model.modules())  # hooks removed after a failure
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="no samples"):
        GramStats().fit(model, [])
    with pytest.raises(UnsupportedLayerError, match="no module named"):
        GramStats(["nope"]).fit(model, [torch.randn(2, 1, 8, 8)])
    with pytest.raises(UnsupportedLayerError, match="does not support"):
        GramStats(["1"]).fit(model, [torch.randn(2, 1, 8, 8)])
    with pytest.raises(NotFittedError):
        GramStats().layer_names


def test_unused_layer_warns():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.used(x)

    with pytest.warns(UserWarning, match="never called"):
        GramStats().fit(Net(), [torch.randn(4, 3)])


def test_augmented_gram_is_gram_of_rows_with_a_one():
    layer = nn.Linear(4, 2).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    stats = GramStats().fit(layer, [x])
    xa = torch.cat([x, torch.ones(6, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(stats.augmented_gram(""), xa.T @ xa)


def test_check_model_warns_about_layers_the_statistics_leave_out():
    model = small_cnn()
    stats = GramStats(["0", "3"]).fit(model, [torch.randn(2, 1, 8, 8)])
    with pytest.warns(UserWarning, match=r"\['7'\]"):
        stats.check_model(model)


OFFSET_CASES = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=5, padding=2),
    dict(kernel_size=(3, 2), dilation=(2, 1), padding="same"),
    dict(kernel_size=(2, 4), padding="same"),  # asymmetric implicit padding
    dict(kernel_size=3, padding="valid"),
    dict(kernel_size=(1, 3), padding=(0, 1)),
    dict(kernel_size=5, padding=(4, 1)),  # windows reaching past the map: empty border rows
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
]


def _offset_route(layer, x, **kwargs):
    """The offset route as the layer adapter calls it (implicit zero padding, else the padded map)."""
    from pgu.gram.conv2d_geometry import conv2d_explicit_padding, conv2d_padded
    from pgu.gram.conv_gram import offset_patch_gram

    if layer.padding_mode == "zeros":
        xm, pads = x, conv2d_explicit_padding(layer)
    else:
        xm, pads = conv2d_padded(layer, x), (0, 0, 0, 0)
    return offset_patch_gram(xm, layer.kernel_size, layer.dilation, pads, torch.float64, **kwargs)


@pytest.mark.parametrize("case", OFFSET_CASES, ids=str)
@pytest.mark.parametrize("chunking", [{}, dict(chunk_elements=1, border_images=2)], ids=["one-chunk", "chunked"])
def test_offset_route_equals_the_explicit_loop(case, chunking):
    """The fast stride-1 route (products per tap offset, border corrections) against the per-patch oracle."""
    layer = nn.Conv2d(3, 2, **case).double()
    x = torch.randn(5, 3, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(_offset_route(layer, x, **chunking), explicit_gram(layer, x), rtol=1e-12, atol=1e-10)


def test_offset_route_on_a_map_smaller_than_the_kernel():
    layer = nn.Conv2d(2, 2, kernel_size=5, padding=2).double()
    x = torch.randn(3, 2, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(_offset_route(layer, x), explicit_gram(layer, x), rtol=1e-12, atol=1e-10)


def test_wide_convs_take_the_offset_route_and_stay_exact():
    """Through GramStats, with enough channels that the adapter picks the offset route itself."""
    from pgu.gram.accumulators import conv2d_gram_route

    one = (1, 1)
    assert conv2d_gram_route(32, (5, 5), one, one, (14, 14), (2, 2, 2, 2)) == "offsets"  # LeNet's second conv
    assert conv2d_gram_route(32, (3, 3), one, one, (32, 32), (1, 1, 1, 1)) == "offsets"  # All-CNN's wide convs
    assert conv2d_gram_route(32, (3, 3), (2, 2), one, (32, 32), (1, 1, 1, 1)) == "unfold"  # stride 2
    assert conv2d_gram_route(1, (5, 5), one, one, (28, 28), (2, 2, 2, 2)) == "rows"  # few channels
    assert conv2d_gram_route(64, (1, 1), one, one, (8, 8), (0, 0, 0, 0)) == "unfold"
    # 512 channels on a 16x16 map: the offset route's float64 buffers would pass 256 MiB
    assert conv2d_gram_route(512, (3, 3), one, one, (16, 16), (1, 1, 1, 1)) != "offsets"
    layer = nn.Conv2d(16, 3, kernel_size=3, padding=1).double()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    assert conv2d_gram_route(16, (3, 3), one, one, (6, 5), (1, 1, 1, 1)) == "offsets"
    stats = GramStats().fit(layer, batches(x, size=1))
    torch.testing.assert_close(stats.gram_[""], explicit_gram(layer, x), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(stats.row_sum_[""], explicit_rows(layer, x).sum(0))


@pytest.mark.parametrize("d", [5, 383, 800, 1001])
def test_upper_triangle_product_is_the_full_product_and_exactly_symmetric(d):
    from pgu.gram.triangle import upper_blocks_gram

    rows = torch.randn(40, d)
    gram = upper_blocks_gram(rows, min_block=100)
    torch.testing.assert_close(gram, rows.T @ rows, rtol=1e-5, atol=1e-4)
    assert torch.equal(gram, gram.T)


def test_routes_and_float32_products_agree_with_the_float64_oracle():
    from unittest.mock import patch

    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(16 * 8 * 8, 800), nn.ReLU(), nn.Linear(800, 3))
    x = torch.randn(16, 1, 8, 8)
    fast = GramStats().fit(model, [x])
    with (patch("pgu.gram.accumulators.conv2d_gram_route", lambda *a: "unfold"),
          patch("pgu.gram.accumulators.upper_blocks_gram", lambda r: r.T @ r)):
        slow = GramStats(precision="float64").fit(model, [x])
    for n in slow.layer_names:
        torch.testing.assert_close(fast.gram_[n], slow.gram_[n], rtol=1e-5,
                                   atol=1e-5 * float(slow.gram_[n].abs().max()))
    with pytest.raises(ValueError, match="precision"):
        GramStats(precision="half")


def test_float32_storage_halves_the_file_and_loads_as_float64(tmp_path):
    stats = GramStats().fit(small_cnn(), [torch.randn(20, 1, 8, 8)])
    stats.save(tmp_path / "64.safetensors")
    stats.save(tmp_path / "32.safetensors", storage="float32")
    small, big = (tmp_path / "32.safetensors").stat().st_size, (tmp_path / "64.safetensors").stat().st_size
    assert small < 0.6 * big
    back = GramStats.load(tmp_path / "32.safetensors")
    for n in stats.layer_names:
        assert back.gram_[n].dtype == torch.float64
        torch.testing.assert_close(back.gram_[n], stats.gram_[n], rtol=1e-6,
                                   atol=1e-6 * float(stats.gram_[n].abs().max()))
    report = stats.memory_report()
    assert [r["layer"] for r in report][0] == "7" and sum(r["bytes"] for r in report) == sum(stats.nbytes.values())
    assert report[0]["bytes"] == 8 * (96 * 96 + 96)
    with pytest.raises(ValueError, match="storage"):
        stats.save(tmp_path / "x.safetensors", storage="half")


@pytest.mark.parametrize("sizes", [[3, 7, 12, 1], [5, 5], [20], [2]], ids=str)
def test_rows_accumulator_buffers_and_flushes_exactly(sizes):
    """Rows copied into a small buffer, flushed when full, big batches multiplied directly: same as one product."""
    from pgu.gram.accumulators import RowsGramAccumulator

    x = torch.randn(sum(sizes), 6, dtype=torch.float64)
    acc = RowsGramAccumulator(lambda b: b, torch.float64, flush_rows=5)
    start = 0
    for n in sizes:
        acc.add(x[start : start + n])
        start += n
    gram, row_sum, n_rows = acc.result()
    torch.testing.assert_close(gram, x.T @ x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(row_sum, x.sum(0), rtol=1e-12, atol=1e-12)
    assert n_rows == x.shape[0]
    assert RowsGramAccumulator(lambda b: b, torch.float64).result() is None
    with pytest.raises(ValueError, match="width"):
        acc.add(torch.randn(2, 5, dtype=torch.float64))


def test_rows_accumulator_copies_rows_it_keeps():
    """A buffered batch modified in place afterwards (as a later in-place op could) does not change the result."""
    from pgu.gram.accumulators import RowsGramAccumulator

    x = torch.randn(3, 4, dtype=torch.float64)
    expected = x.T @ x
    acc = RowsGramAccumulator(lambda b: b, torch.float64, flush_rows=100)
    acc.add(x)
    x.zero_()
    torch.testing.assert_close(acc.result()[0], expected)


def test_forward_chunks_do_not_change_the_statistics(monkeypatch):
    """A loader batch forwarded in chunks (as on a CPU) gives the statistics of the whole batch."""
    import pgu.fast_forward

    model = small_cnn(torch.float64)
    x = torch.randn(11, 1, 8, 8, dtype=torch.float64)
    monkeypatch.setattr(pgu.fast_forward, "CPU_CHUNK", 3)
    chunked = GramStats().fit(model, [x])
    monkeypatch.setattr(pgu.fast_forward, "CPU_CHUNK", None)
    whole = GramStats().fit(model, [x])
    assert chunked.n_samples_ == whole.n_samples_ == 11
    for n in whole.layer_names:
        torch.testing.assert_close(chunked.gram_[n], whole.gram_[n], rtol=1e-12, atol=1e-9)
        assert chunked.n_rows_[n] == whole.n_rows_[n]
    model.eval()
    with torch.no_grad():
        h = model[:7](x)
    torch.testing.assert_close(chunked.gram_["7"], h.T @ h, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_conv_accumulator_sums_batches_of_different_map_sizes(padding_mode):
    """A fully convolutional layer fed maps of two sizes: one route per size, summed (offset route at 16 channels)."""
    layer = nn.Conv2d(16, 3, kernel_size=3, padding=1, padding_mode=padding_mode).double()
    a = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    b = torch.randn(3, 16, 8, 8, dtype=torch.float64)
    stats = GramStats().fit(layer, [a, b, a[:1]])
    expected = explicit_gram(layer, a) + explicit_gram(layer, b) + explicit_gram(layer, a[:1])
    torch.testing.assert_close(stats.gram_[""], expected, rtol=1e-12, atol=1e-10)
    rows = torch.cat([explicit_rows(layer, a), explicit_rows(layer, b), explicit_rows(layer, a[:1])])
    torch.testing.assert_close(stats.row_sum_[""], rows.sum(0), rtol=1e-12, atol=1e-10)
    assert stats.n_rows_[""] == rows.shape[0]


class ViewsItsConvOutput(nn.Module):
    """Flattens a conv output with ``.view()``, which a channels-last tensor refuses."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 5 * 5, 4)

    def forward(self, x):
        h = self.conv(x)
        return self.fc(h.view(h.shape[0], -1))


def test_cpu_pass_runs_channels_last_and_restores_the_weight_layout():
    model = small_cnn(torch.float64)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    stats = GramStats().fit(model, [x])
    for n, p in model.named_parameters():
        assert p.is_contiguous() and torch.equal(p, before[n])
    model.eval()
    with torch.no_grad():
        h = model[:7](x)
    torch.testing.assert_close(stats.gram_["7"], h.T @ h, rtol=1e-12, atol=1e-9)
    # a model kept channels-last stays so
    model.to(memory_format=torch.channels_last)
    GramStats().fit(model, [x])
    assert model[3].weight.is_contiguous(memory_format=torch.channels_last)


def test_a_model_that_needs_the_contiguous_layout_is_retried_in_it():
    model = ViewsItsConvOutput().double()
    x = torch.randn(5, 2, 5, 5, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        with torch.no_grad():
            model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    model.to(memory_format=torch.contiguous_format)
    stats = GramStats().fit(model, batches(x, size=2))
    assert model.conv.weight.is_contiguous()
    torch.testing.assert_close(stats.gram_["conv"], explicit_gram(model.conv, x), rtol=1e-12, atol=1e-10)
    with torch.no_grad():
        h = model.conv(x).reshape(5, -1)
    torch.testing.assert_close(stats.gram_["fc"], h.T @ h, rtol=1e-12, atol=1e-10)
    assert stats.n_samples_ == 5


def test_a_model_failing_in_both_layouts_raises_and_keeps_its_weights():
    model = ViewsItsConvOutput().double()
    weight = model.conv.weight.detach().clone()
    with pytest.raises(ValueError, match="the model failed"):
        GramStats().fit(model, [torch.randn(2, 2, 6, 6, dtype=torch.float64)])  # fc expects 5x5 maps
    assert model.conv.weight.is_contiguous() and torch.equal(model.conv.weight, weight)


def test_channels_last_weights_restore_the_exact_strides():
    from pgu.modes import ChannelsLastWeights

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 2, 3))  # a one-channel (ambiguous) weight too
    strides = [p.stride() for p in model.parameters()]
    values = [p.detach().clone() for p in model.parameters()]
    layout = ChannelsLastWeights(model)
    assert model[0].weight.stride() != strides[0] and model[1].weight.is_contiguous(memory_format=torch.channels_last)
    layout.restore()
    assert [p.stride() for p in model.parameters()] == strides
    assert all(torch.equal(p, v) for p, v in zip(model.parameters(), values))



def test_unfold_route_in_pieces_is_exact(monkeypatch):
    """The unfold route split into one-image pieces (as large batches are) against the per-patch loop."""
    from unittest.mock import patch

    import pgu.gram.accumulators

    monkeypatch.setattr(pgu.gram.accumulators, "UNFOLD_ELEMENTS", 1)
    layer = nn.Conv2d(**CONV_CASES["stride2_pad1"]).double()
    x = torch.randn(5, layer.in_channels, 7, 8, dtype=torch.float64)
    with patch("pgu.gram.accumulators.conv2d_gram_route", lambda *a: "unfold"):
        stats = GramStats().fit(layer, [x])
    torch.testing.assert_close(stats.gram_[""], explicit_gram(layer, x), rtol=1e-12, atol=1e-12)


def test_offset_route_in_one_image_chunks_through_the_pass_is_exact(monkeypatch):
    """GramStats' tap-offset route, its chunk size taken from the device's piece size (here one image),
    against the loop."""
    from unittest.mock import patch

    import pgu.gram.accumulators

    monkeypatch.setattr(pgu.gram.accumulators, "OFFSET_CHUNK_ELEMENTS", 1)
    layer = nn.Conv2d(16, 4, 3, padding=1).double()
    x = torch.randn(3, 16, 6, 5, dtype=torch.float64)
    routes = []

    def offsets(*args):
        routes.append("offsets")
        return "offsets"

    with patch("pgu.gram.accumulators.conv2d_gram_route", offsets):
        stats = GramStats().fit(layer, [x])
    assert routes == ["offsets"]
    torch.testing.assert_close(stats.gram_[""], explicit_gram(layer, x), rtol=1e-12, atol=1e-12)


def test_piece_sizes_and_stats_batches_follow_the_device():
    """CPU passes work in cache-sized pieces and batches of 512; a GPU in large ones
    (its launches dominate otherwise)."""
    from pgu.gram.accumulators import GPU_PIECE_ELEMENTS, OFFSET_CHUNK_ELEMENTS, UNFOLD_ELEMENTS, piece_elements
    from pgu.stats import stats_batch_size

    assert piece_elements(torch.device("cpu"), "unfold") == UNFOLD_ELEMENTS
    assert piece_elements("cpu", "offsets") == OFFSET_CHUNK_ELEMENTS
    assert piece_elements(torch.device("cuda"), "unfold") == piece_elements("cuda:0", "offsets") == GPU_PIECE_ELEMENTS
    assert GPU_PIECE_ELEMENTS > max(UNFOLD_ELEMENTS, OFFSET_CHUNK_ELEMENTS)
    assert stats_batch_size("cpu") == 512 and stats_batch_size(torch.device("cuda")) > 512


def test_gpu_route_unfolds_narrow_convs_and_keeps_the_cost_model_for_wide_ones():
    """A GPU unfolds convs below GPU_OFFSET_MIN_CHANNELS (one large product) and routes wider ones as a CPU does."""
    from pgu.gram.accumulators import GPU_OFFSET_MIN_CHANNELS, conv2d_gram_route

    geometry = ((3, 3), (1, 1), (1, 1), (16, 16), (1, 1, 1, 1))
    narrow, wide = GPU_OFFSET_MIN_CHANNELS // 2, GPU_OFFSET_MIN_CHANNELS * 2
    assert conv2d_gram_route(narrow, *geometry) == "offsets"  # the CPU's cheapest for a stride-1 3x3 conv
    assert conv2d_gram_route(narrow, *geometry, torch.device("cuda")) == "unfold"
    assert conv2d_gram_route(wide, *geometry, "cuda:0") == conv2d_gram_route(wide, *geometry) == "offsets"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_pass_matches_the_float64_oracle():
    """The pass on a GPU (its own piece sizes and routes) against the per-patch loop on the CPU."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 24, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Conv2d(24, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    x = torch.randn(32, 3, 16, 16)
    stats = GramStats().fit(model.cuda(), [x.cuda()])
    model.cpu().double()
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0]))
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model(x.double())
    for h in hooks:
        h.remove()
    for name, layer_input in inputs.items():
        exact = explicit_gram(dict(model.named_modules())[name], layer_input)
        torch.testing.assert_close(stats.gram_[name], exact, rtol=1e-5, atol=1e-5 * float(exact.abs().max()))


def test_kept_rows_are_the_rows_behind_the_gram_and_only_while_fewer_than_the_width():
    """``keep_rows``: a layer's rows ``R`` with ``R^T R`` its Gram (conv patches in the weight's column order), kept
    only while fewer than its width; a grouped conv or an embedding keeps none; sums and files carry none."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, groups=2),
                          nn.Flatten(), nn.Linear(8 * 3 * 3, 5)).double()
    x = torch.randn(6, 3, 7, 7, dtype=torch.float64)
    stats = GramStats(keep_rows=True).fit(model, batches(x, size=4))
    plain = GramStats().fit(model, batches(x, size=4))
    # the first conv: 6 x 49 = 294 patch rows >= 27 wide; the grouped one: none; the Linear: 6 rows < 72 wide
    assert set(stats.rows_) == {"4"} and plain.rows_ == {}
    rows = stats.rows_["4"]
    assert rows.shape == (6, 72)
    torch.testing.assert_close(rows.T @ rows, stats.gram_["4"], rtol=1e-12, atol=1e-10)
    for name in stats.layer_names:  # keeping rows changes no statistic
        assert torch.equal(stats.gram_[name], plain.gram_[name])
    wide = nn.Sequential(nn.Conv2d(3, 4, 3)).double()  # a conv: 2 x 4 patches of 27 columns, fewer than 27
    maps = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    few = GramStats(keep_rows=True).fit(wide, [maps])
    torch.testing.assert_close(few.rows_["0"], explicit_rows(wide[0], maps), rtol=0, atol=0)
    torch.testing.assert_close(few.rows_["0"].T @ few.rows_["0"], few.gram_["0"], rtol=1e-12, atol=1e-10)
    assert few.rows_["0"].shape == (8, 27)
    assert (stats + plain).rows_ == {} and (stats - plain).rows_ == {}
