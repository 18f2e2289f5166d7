"""The CGS from an anchor eigendecomposition (pgu.cgs_anchor) against exact eigh, the oracle."""

import pytest
import torch
from torch import nn

import pgu.cgs_anchor
from pgu import GramStats, unlearn
from pgu.cgs_anchor import CGSAnchor, _LayerAnchor, _removed_along
from pgu.subspace import CoreGradientSpace


def stats_of(rows: torch.Tensor) -> GramStats:
    """GramStats of one Linear layer ("0") whose inputs are ``rows`` (float64, so sums are exact enough)."""
    model = nn.Sequential(nn.Linear(rows.shape[1], 3)).double()
    return GramStats(precision="float64").fit(model, [rows[i:i + 64] for i in range(0, len(rows), 64)])


def projector(basis):
    return basis @ basis.T


def commuting_problem(d=40, n=400, seed=0):
    """Rows along the columns of one orthogonal matrix: every Gram (all, forget, retain) shares its eigenvectors."""
    g = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))
    column = torch.arange(n) % d
    scale = (1.0 + torch.arange(d, dtype=torch.float64))[column] * (1 + 0.1 * torch.rand(n, generator=g,
                                                                                            dtype=torch.float64))
    return rotation[:, column].T * scale[:, None]


def test_when_the_forget_gram_shares_the_anchors_eigenvectors_the_first_order_cgs_is_exact():
    rows = commuting_problem()
    everything, forget = stats_of(rows), stats_of(rows[::7])
    retain = everything - forget
    anchor = CGSAnchor.build(everything, min_dim=8, refresh_share=0.5)  # (a seventh of the energy goes)
    for threshold in (0.5, 0.9, 0.97):
        cgs, nxt = anchor.fit(retain, forget, threshold)
        exact = CoreGradientSpace(threshold).fit(retain)
        assert nxt.last_routes == {"0": "anchored"}
        assert cgs.rank_ == exact.rank_
        assert torch.allclose(projector(cgs.basis_["0"]), projector(exact.basis_["0"]), atol=1e-8)
        assert torch.allclose(cgs.eigenvalues_["0"], exact.eigenvalues_["0"], rtol=1e-9, atol=1e-6)
    # nothing was modified: the anchor still describes `everything`
    assert float(anchor.layers["0"].shift.abs().max()) == 0.0


def random_problem(d=64, n=3000, n_forget=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, dtype=torch.float64, generator=g) * torch.logspace(0, -2, d, dtype=torch.float64)
    rows = torch.randn(n, d, dtype=torch.float64, generator=g) @ mixing.T
    return rows, rows[:n_forget]


def test_a_small_request_leaves_the_first_order_cgs_protecting_what_the_exact_one_protects():
    rows, forget_rows = random_problem()
    everything, forget = stats_of(rows), stats_of(forget_rows)
    retain = everything - forget
    cgs, nxt = CGSAnchor.build(everything, min_dim=8).fit(retain, forget, 0.9)
    exact = CoreGradientSpace(0.9).fit(retain)
    gram = retain.gram_["0"]
    unprotected = float(gram.trace()) - float((exact.basis_["0"].T @ gram @ exact.basis_["0"]).trace())
    ours = float(gram.trace()) - float((cgs.basis_["0"].T @ gram @ cgs.basis_["0"]).trace())
    assert cgs.rank_["0"] == exact.rank_["0"]
    assert unprotected <= ours <= unprotected * (1 + 1e-3)  # exact is optimal (Ky Fan); ours within 0.1% of it
    assert torch.allclose(cgs.basis_["0"].T @ cgs.basis_["0"], torch.eye(cgs.rank_["0"], dtype=torch.float64),
                          atol=1e-10)
    share = float(forget.gram_["0"].trace() / everything.gram_["0"].trace())
    assert nxt.removed_share()["0"] == pytest.approx(share, rel=1e-9)
    # the forget energy inside the CGS comes with the anchor's answer: the outside share without the d^2 k product
    assert cgs.outside_share(forget, inside=nxt.last_inside)["0"] == pytest.approx(cgs.outside_share(forget)["0"],
                                                                                    rel=1e-7)


def angles_to(basis, exact):
    return torch.rad2deg(torch.arccos(torch.linalg.svdvals(basis.T @ exact).clamp(max=1.0)))


def test_rayleigh_ritz_at_the_cut_is_exact_over_every_eigenvector_and_closer_than_first_order_over_a_window(
        monkeypatch):
    """The window's Ritz pairs replace first order's: over all ``d`` eigenvectors that is exact eigh of the retain Gram
    (the oracle); over none it is first order; the default window, between, leaves smaller angles than first order."""
    rows, forget_rows = random_problem(d=128, n=3000, n_forget=40)
    everything, forget = stats_of(rows), stats_of(forget_rows)
    retain = everything - forget
    exact = CoreGradientSpace(0.9).fit(retain)

    def served(share, least):
        monkeypatch.setattr(pgu.cgs_anchor, "RITZ_SHARE", share)
        monkeypatch.setattr(pgu.cgs_anchor, "RITZ_MIN", least)
        cgs, nxt = CGSAnchor.build(everything, min_dim=8).fit(retain, forget, 0.9)
        assert nxt.last_routes == {"0": "anchored"}
        basis = cgs.basis_["0"]
        assert torch.allclose(basis.T @ basis, torch.eye(basis.shape[1], dtype=torch.float64), atol=1e-10)
        assert cgs.outside_share(forget, inside=nxt.last_inside)["0"] == pytest.approx(
            cgs.outside_share(forget)["0"], rel=1e-7)
        return cgs

    whole = served(1.0, 0)
    assert whole.rank_ == exact.rank_
    assert torch.allclose(projector(whole.basis_["0"]), projector(exact.basis_["0"]), atol=1e-8)
    assert torch.allclose(whole.eigenvalues_["0"], exact.eigenvalues_["0"], rtol=1e-9, atol=1e-9)
    first, window = served(0.0, 0), served(0.25, 0)
    assert first.rank_ == window.rank_ == exact.rank_
    first_angles = angles_to(first.basis_["0"], exact.basis_["0"])
    window_angles = angles_to(window.basis_["0"], exact.basis_["0"])
    assert float(first_angles.max()) > 1.0  # first order errs at the cut here: a window has something to fix
    assert float(window_angles.max()) < 0.5 * float(first_angles.max())


def test_the_forget_energy_along_each_eigenvector_is_the_same_by_factor_and_directly():
    rows, forget_rows = random_problem(d=192, n_forget=10)
    anchor = CGSAnchor.build(stats_of(rows), min_dim=8)
    layer, f_gram = anchor.layers["0"], stats_of(forget_rows).gram_["0"]
    vectors = layer.rows.T
    by_factor, _ = _removed_along(layer, f_gram, rows=10, name="0")  # 18 < 192 / 8: the factor route
    directly, _ = _removed_along(layer, f_gram, rows=192, name="0")
    assert torch.allclose(by_factor, directly, rtol=1e-7, atol=1e-9 * float(directly.max()))
    by_rows, along = _removed_along(layer, f_gram, rows=10, name="0", factor=forget_rows)  # the pass's own rows
    assert torch.allclose(by_rows, directly, rtol=1e-9, atol=1e-12 * float(directly.max()))
    assert torch.allclose(along, vectors.T @ forget_rows.T)
    assert torch.allclose(directly, torch.diagonal(vectors.T @ f_gram @ vectors))
    # wide layers: the direct route in float32 products, within float32's rounding of the float64 one
    wide = torch.randn(1100, 1100, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    wide_gram = wide @ wide.T
    wide_vectors = torch.linalg.eigh(wide_gram)[1]
    exact = ((wide_gram @ wide_vectors) * wide_vectors).sum(0)
    wide_layer = _LayerAnchor(torch.zeros(1100), wide_vectors.T.contiguous(), torch.zeros(1100), 0.0, False)
    fast, _ = _removed_along(wide_layer, wide_gram, rows=1100, name="w")
    assert fast.dtype == torch.float64
    assert torch.allclose(fast, exact, rtol=1e-4, atol=1e-5 * float(exact.abs().max()))
    assert float(fast.sum()) == pytest.approx(float(wide_gram.trace()), rel=1e-6)


def test_a_request_served_with_its_forget_rows_gets_the_cgs_it_gets_from_their_gram():
    rows, forget_rows = random_problem(d=96, n_forget=30)
    everything = stats_of(rows)
    model = nn.Sequential(nn.Linear(96, 3)).double()
    kept = GramStats(precision="float64", keep_rows=True).fit(model, [forget_rows])
    assert kept.rows_["0"].shape == (30, 96)
    by_gram = stats_of(forget_rows)
    anchor = CGSAnchor.build(everything, min_dim=8)
    with_rows, after_rows = anchor.fit(everything - kept, kept, 0.9)
    without, after = anchor.fit(everything - by_gram, by_gram, 0.9)
    assert after_rows.last_routes == after.last_routes == {"0": "anchored"}
    assert with_rows.rank_ == without.rank_
    assert torch.allclose(projector(with_rows.basis_["0"]), projector(without.basis_["0"]), atol=1e-8)
    assert torch.allclose(after_rows.layers["0"].shift, after.layers["0"].shift, rtol=1e-9)
    assert after_rows.last_inside["0"] == pytest.approx(after.last_inside["0"], rel=1e-9)


def test_requests_accumulate_until_the_refresh_share_then_the_layer_is_anchored_again():
    rows, _ = random_problem(n=600)
    state = stats_of(rows)
    anchor = CGSAnchor.build(state, min_dim=8, refresh_share=0.05)
    routes = []
    for t in range(6):  # 20 rows of 600 each: about 3.3% of the energy per request
        forget = stats_of(rows[20 * t:20 * (t + 1)])
        state = state - forget
        cgs, anchor = anchor.fit(state, forget, 0.9)
        routes.append(anchor.last_routes["0"])
        if routes[-1] != "anchored":
            exact = CoreGradientSpace(0.9).fit(state)
            assert torch.allclose(projector(cgs.basis_["0"]), projector(exact.basis_["0"]), atol=1e-8)
            assert anchor.removed_share()["0"] == 0.0
    assert routes[:1] == ["anchored"] and "exact (re-anchored)" in routes


def test_statistics_the_anchor_does_not_describe_get_exact_eigh_and_a_new_anchor():
    rows, forget_rows = random_problem()
    anchor = CGSAnchor.build(stats_of(rows), min_dim=8)
    other = stats_of(rows[100:])  # not the anchor's statistics minus `forget`
    forget = stats_of(forget_rows)
    cgs, nxt = anchor.fit(other, forget, 0.9)
    exact = CoreGradientSpace(0.9).fit(other)
    assert nxt.last_routes["0"] == "exact (the anchor did not match)"
    assert torch.allclose(projector(cgs.basis_["0"]), projector(exact.basis_["0"]), atol=1e-8)
    # narrow layers are never anchored
    narrow = CGSAnchor.build(stats_of(rows), min_dim=1024)
    assert narrow.layers == {}
    _, after = narrow.fit(stats_of(rows) - forget, forget, 0.9)
    assert after.last_routes == {"0": "exact"}


def test_an_anchor_survives_a_round_trip_through_its_file_and_other_files_are_refused(tmp_path):
    rows, forget_rows = random_problem()
    everything, forget = stats_of(rows), stats_of(forget_rows)
    _, anchor = CGSAnchor.build(everything, min_dim=8).fit(everything - forget, forget, 0.9)
    anchor.save(tmp_path / "anchor.safetensors")
    again = CGSAnchor.load(tmp_path / "anchor.safetensors")
    assert again.min_dim == 8 and again.refresh_share == anchor.refresh_share
    for name in ("values", "rows", "shift"):
        assert torch.equal(getattr(again.layers["0"], name), getattr(anchor.layers["0"], name))
    assert again.layers["0"].trace == anchor.layers["0"].trace and again.keys() == anchor.keys()
    # in two parts: the eigendecompositions once, the removed energy per request
    CGSAnchor.build(everything, min_dim=8).save(tmp_path / "other.safetensors", parts=("eigen",))
    anchor.save(tmp_path / "eigen.safetensors", parts=("eigen",))
    _, later = anchor.fit(everything - forget - forget, forget, 0.9)
    later.save(tmp_path / "shifts.safetensors", parts=("shifts",))
    paired = CGSAnchor.load(tmp_path / "eigen.safetensors", shifts=tmp_path / "shifts.safetensors")
    assert torch.equal(paired.layers["0"].shift, later.layers["0"].shift)
    assert torch.equal(paired.layers["0"].rows, anchor.layers["0"].rows)
    with pytest.raises(ValueError, match="other eigendecompositions"):
        CGSAnchor.load(tmp_path / "other.safetensors", shifts=tmp_path / "shifts.safetensors")
    with pytest.raises(ValueError, match="no eigendecompositions"):
        CGSAnchor.load(tmp_path / "shifts.safetensors")
    everything.save(tmp_path / "stats.safetensors")
    with pytest.raises(ValueError, match="not a pgu CGS anchor"):
        CGSAnchor.load(tmp_path / "stats.safetensors")


def test_an_anchor_file_of_the_first_format_eigenvectors_as_columns_still_loads(tmp_path):
    import json

    from safetensors.torch import save_file

    rows, _ = random_problem()
    anchor = CGSAnchor.build(stats_of(rows), min_dim=8)
    anchor.save(tmp_path / "new.safetensors")
    layer = anchor.layers["0"]
    header = {"format": "pgu-cgs-anchor-1", "min_dim": "8", "refresh_share": repr(anchor.refresh_share),
              "layers": json.dumps({"0": {"trace": repr(layer.trace), "augmented": False, "key": layer.key}}),
              "order": json.dumps(["0"]), "parts": json.dumps(["eigen", "shifts"])}
    save_file({"0.values": layer.values, "0.vectors": layer.rows.T.contiguous(), "0.shift": layer.shift},
              tmp_path / "old.safetensors", metadata=header)
    old, new = CGSAnchor.load(tmp_path / "old.safetensors"), CGSAnchor.load(tmp_path / "new.safetensors")
    assert torch.equal(old.layers["0"].rows, new.layers["0"].rows) and old.keys() == new.keys()


def test_unlearn_with_an_anchor_matches_exact_eigh_where_first_order_is_exact():
    rows = commuting_problem(d=32, n=320).float()
    labels = (rows[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(32, 2))
    everything = GramStats(precision="float64").fit(model, [rows[i:i + 64] for i in range(0, 320, 64)])
    forget = [(rows[:16], labels[:16])]
    plain = unlearn(model, forget, everything, stop="none", epochs=2, threshold=0.9)
    fast = unlearn(model, forget, everything, stop="none", epochs=2, threshold=0.9,
                   anchor=CGSAnchor.build(everything, min_dim=8))
    assert fast.anchor is not None and fast.anchor.last_routes == {"0": "anchored"} and plain.anchor is None
    assert fast.cgs.rank_ == plain.cgs.rank_
    for a, b in zip(fast.model.parameters(), plain.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="CGSAnchor"):
        unlearn(model, forget, everything, stop="none", anchor="fast")


def test_a_direction_only_the_forget_samples_carried_leaves_the_cgs():
    """A memorised direction: five forget rows give the weakest direction of the rest the largest eigenvalue of G(D);
    the anchor's CGS holds it, the request's must not (exact eigh agrees)."""
    rows = commuting_problem(d=40, n=400)
    direction = rows[0] / rows[0].norm()  # row 0 lies along the weakest direction of the rest (scale about 1)
    memorised = direction[None, :] * torch.tensor([300.0, 310.0, 290.0, 305.0, 295.0], dtype=torch.float64)[:, None]
    everything, forget = stats_of(torch.cat([memorised, rows])), stats_of(memorised)
    anchor = CGSAnchor.build(everything, min_dim=8, refresh_share=0.9)
    before = CoreGradientSpace(0.5).fit(everything)
    assert float((before.basis_["0"].T @ direction).norm()) > 0.999  # held by the anchor's CGS
    cgs, nxt = anchor.fit(everything - forget, forget, 0.5)
    exact = CoreGradientSpace(0.5).fit(everything - forget)
    assert nxt.last_routes == {"0": "anchored"}
    assert float((cgs.basis_["0"].T @ direction).norm()) < 1e-6  # gone from the request's
    assert torch.allclose(projector(cgs.basis_["0"]), projector(exact.basis_["0"]), atol=1e-8)


def test_forget_rows_off_the_anchors_span_get_exact_eigh():
    """After the model moved, forget rows (taken with the current weights) can carry energy where the statistics had
    none: first order cannot place it, so the layer is anchored again and gets exact eigh."""
    rows, _ = random_problem(d=48, n=2000)
    rows[:, 40:] = 0.0  # the statistics never saw the last 8 input directions
    moved = torch.randn(20, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    everything, forget = stats_of(rows), stats_of(moved)
    retain = everything - forget  # indefinite: the store's bookkeeping after the model moved
    cgs, nxt = CGSAnchor.build(everything, min_dim=8).fit(retain, forget, 0.9)
    exact = CoreGradientSpace(0.9).fit(retain)
    assert nxt.last_routes == {"0": "exact (forget rows off the anchor)"}
    assert nxt.last_misfit["0"] > pgu.cgs_anchor.MISFIT_SHARE
    assert torch.allclose(projector(cgs.basis_["0"]), projector(exact.basis_["0"]), atol=1e-8)
    # forget rows from the statistics' own span stay on the fast path
    _, fits = CGSAnchor.build(everything, min_dim=8).fit(everything - stats_of(rows[:20]), stats_of(rows[:20]), 0.9)
    assert fits.last_routes == {"0": "anchored"} and fits.last_misfit["0"] < 1e-9  # (rounding only)
