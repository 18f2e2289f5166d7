"""A bench's report: ``results.md`` (mean ± std over seeds, one row per method) and plots.

Written from ``results.json`` alone (:func:`write_report`), so a report can be rebuilt
without rerunning anything. Standard deviations are over seeds (``ddof=1``; blank with one
seed). Gap closed = 1 - Avg.Gap(method) / Avg.Gap(original) (docs/protocol.md, Metrics). The poison
scenarios (docs/method.md section 8) get their own columns (:data:`POISON_COLUMNS`) and ``poison.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pgu.bench import metrics

__all__ = ["write_report", "format_table", "summarize"]

COLUMNS = [("UA", "UA"), ("forget_progress", "FA moved"), ("RA", "RA"), ("TA", "TA"), ("MIA", "MIA-Eff"),
           ("loss_MIA", "loss MIA"), ("avg_gap", "Avg.Gap"), ("gap_closed", "gap closed"),
           ("js_divergence", "JS on D_f"), ("seconds", "seconds"), ("speedup", "speed-up")]
POISON_COLUMNS = {
    "poison-flip": [("TA", "TA"), ("TA_recovered", "TA gap recovered"), ("poisoned_true_acc", "D_f true-label acc"),
                    ("FA", "D_f poisoned-label acc"), ("RA", "RA"), ("avg_gap", "Avg.Gap"), ("seconds", "seconds"),
                    ("speedup", "speed-up")],
    "poison-backdoor": [("ASR", "ASR"), ("triggered_acc", "triggered acc"), ("TA", "clean acc (TA)"),
                        ("TA_recovered", "TA gap recovered"),
                        ("poisoned_true_acc", "D_f true-label acc"), ("FA", "D_f poisoned-label acc"), ("RA", "RA"),
                        ("avg_gap", "Avg.Gap"), ("seconds", "seconds"), ("speedup", "speed-up")],
}
"""The table of a poison scenario: the detoxification metrics first (pgu.bench.scoring.score_poisoning)."""
SMALL_GAP = 2.0
"""An original Avg.Gap below this (points) makes small gaps uninformative (docs/protocol.md): the report says so."""


def _stats(values) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return mean, std


def columns_for(results: dict) -> list[tuple[str, str]]:
    """The table's ``(metric, label)`` columns for a bench's scenario."""
    return POISON_COLUMNS.get(results["config"].get("scenario"), COLUMNS)


def summarize(results: dict) -> dict:
    """``{method: {metric: (mean, std)}}`` over the seeds, with gap closed and budget hits."""
    seeds = results["seeds"]
    methods = [m for m in seeds[0]["methods"]] if seeds else []
    keys = {key for key, _ in COLUMNS + columns_for(results)}
    out = {}
    for m in methods:
        rows = [s["methods"][m] for s in seeds if m in s["methods"]]
        derived = ("gap_closed", "forget_progress")
        summary = {key: _stats([r.get(key) for r in rows]) for key in keys if key not in derived}
        closed, progress = [], []
        for s in seeds:
            if m not in s["methods"]:
                continue
            ms = s["methods"]
            closed.append(metrics.gap_closed(ms[m]["avg_gap"], ms["original"]["avg_gap"]))
            progress.append(metrics.forget_progress(ms[m]["FA"], ms["original"]["FA"], ms["retrain"]["FA"]))
        summary["gap_closed"] = _stats(closed)
        summary["forget_progress"] = _stats(progress)
        summary["budget_hits"] = sum(bool(r["details"].get("hit_budget")) for r in rows)
        summary["needs_retain_data"] = rows[0]["needs_retain_data"]
        out[m] = summary
    return out


def _cell(mean, std, key) -> str:
    if mean is None:
        return "-"
    if key in ("gap_closed", "forget_progress", "TA_recovered"):
        text = f"{100 * mean:.1f}%" + (f" ± {100 * std:.1f}" if std is not None else "")  # 99.8%, not 100%
    elif key == "speedup":
        text = f"{mean:.1f}x" + (f" ± {std:.1f}" if std is not None else "")
    elif key in ("js_divergence", "fraction"):  # numbers in [0, 1]
        text = f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
    else:
        text = f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")
    return text


def format_table(results: dict) -> str:
    """The markdown report of a bench."""
    cfg, seeds = results["config"], results["seeds"]
    summary = summarize(results)
    columns = columns_for(results)
    first = seeds[0]
    train_s = _stats([s["original"]["train_seconds"] for s in seeds])[0]
    stats_s = _stats([s["original"]["stats_seconds"] for s in seeds])[0]
    env = results.get("environment", {})
    lines = [
        f"# pgu bench: {cfg['tier']}, {cfg['scenario']} ({first['forget_spec']}, {first['n_forget']} samples "
        f"forgotten)",
        "",
        f"Dataset {results['dataset']['name']} (train {results['dataset']['train']}), recipe "
        f"{results['recipe']['name']}; seeds {', '.join(str(s['seed']) for s in seeds)}; budget "
        f"{cfg['budget_share']:.0%} of the original training's sample passes ({first['budget_samples']:,} samples). "
        f"Original training {train_s:.1f} s; PGU's Gram statistics of D (once per model, not in PGU's seconds) "
        f"{stats_s:.1f} s. Commit {env.get('commit')}, {env.get('cpu')}"
        + (f", {env['gpu']}" if env.get("gpu") else "") + ".",
        "",
        "| method | " + " | ".join(label for _, label in columns) + " | needs D_r | budget hit |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for m, s in summary.items():
        cells = [_cell(*s[key], key) for key, _ in columns]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {'yes' if s['needs_retain_data'] else 'no'} | "
                     f"{s['budget_hits']}/{len(seeds)} |")
    poisoned = cfg.get("scenario") in POISON_COLUMNS
    if poisoned:
        lines += _poison_notes(results, summary)
        lines += ["", "Percent, mean ± std over seeds. RA: accuracy on the clean training samples; Avg.Gap: mean "
                  "|difference| to `retrain` (the clean model) over UA, RA, TA and MIA-Eff; speed-up = retrain seconds "
                  "/ method seconds, same run."]
    else:
        lines += ["", "Percent, mean ± std over seeds. UA = 100 - forget accuracy; MIA-Eff: share of D_f an RBF SVM on "
                  "the true-class probability calls non-member; Avg.Gap: mean |difference| to `retrain` over UA, RA, "
                  "TA and MIA-Eff (0 is perfect); gap closed = 1 - Avg.Gap / Avg.Gap(original); FA moved = how far "
                  "forget accuracy went from the original's toward the retrained model's (100%: reached it, above: "
                  "overshot, 0: left it, below 0: moved away); speed-up = retrain seconds / method seconds, same run."]
    lines += ["", _settings_line(cfg)]
    if seeds and "challenge" in first:
        n = first["challenge"]["models_per_group"]
        quality = _stats([s["challenge"]["forgetting_quality"] for s in seeds])
        score = _stats([s["challenge"]["score"] for s in seeds])
        lines += ["", f"NeurIPS 2023 challenge score of PGU ({n} unlearned and {n} retrained models per seed; "
                  f"docs/protocol.md): forgetting quality F = {_cell(*quality, 'fraction')}, "
                  f"score = {_cell(*score, 'fraction')} (1 is indistinguishable from retraining); doing "
                  f"nothing (the originals): F = "
                  f"{_cell(*_stats([s['challenge']['original_forgetting_quality'] for s in seeds]), 'fraction')}."]
    original_gap = summary.get("original", {}).get("avg_gap", (None, None))[0]
    if original_gap is not None and original_gap < SMALL_GAP and not poisoned:
        lines += ["", f"**Caution:** doing nothing (`original`) already scores an Avg.Gap of {original_gap:.2f} here: "
                  f"the original is close to the retrained model, so a small gap proves little (docs/protocol.md). "
                  f"Judge methods on settings where the original's gap is large (class or sub-class forgetting)."]
    if seeds and "steps" in first:
        lines += ["", "The table is after the last request. After each request (mean over seeds; UA and Avg.Gap "
                  "against a model retrained without every request so far):", "",
                  "| request | forgotten so far | " + " | ".join(f"{m} UA | {m} Avg.Gap" for m in summary) + " |",
                  "|---|---" + "|---|---" * len(summary) + "|"]
        for i, step in enumerate(first["steps"]):
            cells = []
            for m in summary:
                ua = _stats([s["steps"][i]["methods"][m]["UA"] for s in seeds])[0]
                gap = _stats([s["steps"][i]["methods"][m]["avg_gap"] for s in seeds])[0]
                cells += [f"{ua:.2f}", f"{gap:.2f}"]
            lines.append(f"| {step['step']} | {step['n_forget']} | " + " | ".join(cells) + " |")
        lines += ["", "![metrics after each request](sequential.png)"]
    lines += ["", "![prediction entropy on D_f](entropy.png)", "", "![Avg.Gap against speed-up](gap_speedup.png)", ""]
    if "pgu" in summary:
        lines += ["![PGU: forget and val accuracy per epoch](pgu_curve.png)", ""]
    return "\n".join(lines)


def _poison_notes(results: dict, summary: dict) -> list[str]:
    """What the poison table means, and the poisoning itself."""
    p = results["seeds"][0]["poisoning"]
    if p["kind"] == "flip":
        what = (f"label flipping: {p['n_per_class']} images per class relabelled each way between {len(p['pairs'])} "
                f"random class pairs (drawn with the seed; seed {results['seeds'][0]['seed']}: {p['pairs']})")
    else:
        what = (f"BadNets backdoor: a {p['size']}x{p['size']} trigger (each channel's brightest value) in the "
                f"bottom-right corner of {p['fraction']:.0%} of the images of the classes other than {p['target']}, "
                f"relabelled {p['target']}")
    lines = ["", f"Poisoning: {what}; {p['n_poisoned']} samples, D_f = all of them, with the labels they were trained "
             f"with. `original` is the model trained on the poisoned data; `retrain` is the model trained on the "
             f"clean samples only, the reference. TA gap recovered = (TA - TA(original)) / (TA(retrain) - "
             f"TA(original)), per seed (blank where that gap is under 0.1 points). D_f true-label acc: accuracy on "
             f"the poisoned training images under their true labels."]
    if p["kind"] == "backdoor":
        lines.append("ASR: share of the test images of the other classes, stamped with the trigger, predicted as the "
                     "target; triggered acc: accuracy on those stamped images under their true labels; clean acc is "
                     "the test accuracy on unstamped images.")
    lines += ["", "![detoxification metrics](poison.png)"]
    return lines


def _settings_line(cfg: dict) -> str:
    """Which settings the methods ran with: the published ones, or those `pgu select` chose (and their factors)."""
    selected = cfg.get("selected") or {}
    if not selected:
        return "Settings: the authors' published values (pgu/bench/methods/settings.toml), scaled to the tier's epochs."
    factors = ", ".join(f"{name} x{v['factor']:g}" for name, v in selected.items())
    where = "pgu/selected" if cfg.get("settings") == "selected" else cfg.get("settings")
    return (f"Settings: chosen on val only by `pgu select` ({where}; a factor on the published value, the same "
            f"number of trials for every method): {factors}.")


def write_report(results: dict, out) -> None:
    """``out/results.md``, ``out/entropy.png`` and ``out/gap_speedup.png``."""
    out = Path(out)
    (out / "results.md").write_text(format_table(results))
    _plot_entropy(results, out / "entropy.png")
    _plot_gap_speedup(results, out / "gap_speedup.png")
    if results["seeds"] and "steps" in results["seeds"][0]:
        _plot_sequential(results, out / "sequential.png")
    if any(s["methods"].get("pgu", {}).get("details", {}).get("history") for s in results["seeds"]):
        _plot_pgu_curve(results, out / "pgu_curve.png")
    if results["config"].get("scenario") in POISON_COLUMNS and results["seeds"]:
        _plot_poison(results, out / "poison.png")


def _plot_entropy(results: dict, path: Path) -> None:
    seeds = results["seeds"]
    names = list(seeds[0]["entropy_histograms"])
    fig, ax = _axes((6, 3.5))
    bins = len(next(iter(seeds[0]["entropy_histograms"].values())))
    edges = np.linspace(0, 1, bins + 1)  # the histograms span [0, ln(classes)] (pgu.bench.scoring)
    for name in names:
        counts = np.sum([s["entropy_histograms"][name] for s in seeds], axis=0)
        share = counts / max(1, counts.sum())
        ax.stairs(share, edges, label=name)
    ax.set_xlabel("prediction entropy on D_f / ln(classes)")
    ax.set_ylabel("share of D_f")
    _save(fig, ax, f"{results['config']['tier']}, {results['config']['scenario']}: entropy on D_f, all seeds", path)


def _plot_gap_speedup(results: dict, path: Path) -> None:
    from matplotlib.ticker import FormatStrFormatter

    summary = summarize(results)
    fig, ax = _axes()
    for name, s in summary.items():
        gap = s["avg_gap"][0]
        speed = s["speedup"][0] if s["speedup"][0] is not None else (1.0 if name == "retrain" else None)
        if speed is None:
            ax.axhline(gap, linestyle=":", color="grey", label=f"{name} (no change)")
            continue
        ax.scatter([speed], [gap], label=name)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%gx"))
    ax.set_xlabel("speed-up over retraining (same run)")
    ax.set_ylabel("Avg.Gap to retrain (points)")
    _save(fig, ax, f"{results['config']['tier']}, {results['config']['scenario']}", path)


def _plot_pgu_curve(results: dict, path: Path) -> None:
    """PGU's forget and val accuracy after each epoch (epoch 0: before unlearning), one line per seed."""
    fig, ax = _axes()
    for s in results["seeds"]:
        history = s["methods"].get("pgu", {}).get("details", {}).get("history") or []
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [h["forget_acc"] for h in history], marker="o", label=f"forget, seed {s['seed']}")
        if all(h.get("val_acc") is not None for h in history):
            ax.plot(epochs, [h["val_acc"] for h in history], linestyle="--", label=f"val, seed {s['seed']}")
    ax.set_xlabel("PGU epoch")
    ax.set_ylabel("accuracy (%)")
    _save(fig, ax, f"{results['config']['tier']}, {results['config']['scenario']}: PGU per epoch", path, legend_size=7)


def _plot_poison(results: dict, path: Path) -> None:
    """Per method, mean ± std over seeds: test accuracy (and, for a backdoor, ASR), with the poisoned and clean
    models' as lines."""
    summary = summarize(results)
    backdoor = results["config"]["scenario"] == "poison-backdoor"
    panels = [("TA", "test accuracy (%)")] + \
             ([("ASR", "attack success rate (%)"), ("triggered_acc", "accuracy on triggered test images (%)")]
              if backdoor else []) + \
             [("poisoned_true_acc", "D_f true-label accuracy (%)")]
    fig, axes = _axes((4.2 * len(panels), 3.6), columns=len(panels))
    names = [m for m in summary if m not in ("original", "retrain")]
    for ax, (key, label) in zip(axes, panels):
        means = [summary[m][key][0] for m in names]
        errs = [summary[m][key][1] or 0.0 for m in names]
        colours = ["tab:orange" if m.startswith("pgu") else "tab:blue" for m in names]  # PGU's bars stand out
        ax.bar(range(len(names)), [0.0 if v is None else v for v in means], yerr=errs, color=colours, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        for ref, style in (("original", ":"), ("retrain", "--")):
            ax.axhline(summary[ref][key][0], linestyle=style, color="black" if ref == "retrain" else "red",
                       label="poisoned original" if ref == "original" else "clean (retrain)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        if key == "TA":  # zoom on the references; a bar below the axis is labelled with its value
            refs = [summary["original"][key][0], summary["retrain"][key][0]]
            low = max(0.0, min(refs) - 3)
            ax.set_ylim(low, min(100.0, max(refs) + 1))
            for i, v in enumerate(means):
                if v is not None and v < low:
                    ax.annotate(f"{v:.1f}", (i, low), xytext=(0, 3), textcoords="offset points", ha="center",
                                fontsize=7, color="black", rotation=90, va="bottom")
    n = len(results["seeds"])
    fig.suptitle(f"{results['config']['tier']}, {results['config']['scenario']} ({n} seed{'' if n == 1 else 's'})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _plot_sequential(results: dict, path: Path) -> None:
    """UA, test accuracy and Avg.Gap of each method after each request, mean over seeds."""
    seeds = results["seeds"]
    fig, axes = _axes((10, 3.2), columns=3)
    names = list(seeds[0]["steps"][0]["methods"])
    steps = [st["step"] for st in seeds[0]["steps"]]
    for ax, (key, label) in zip(axes, [("UA", "UA (%)"), ("TA", "test accuracy (%)"), ("avg_gap", "Avg.Gap")]):
        for name in names:
            ax.plot(steps, [np.mean([s["steps"][i]["methods"][name][key] for s in seeds]) for i in range(len(steps))],
                    marker="o", label=name)
        ax.set_xlabel("request")
        ax.set_ylabel(label)
    _save(fig, axes[-1], f"{results['config']['tier']}, sequential", path)


def _axes(size=(5, 3.5), columns: int = 1):
    """A new figure and axes on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=size)


def _save(fig, ax, title: str, path: Path, legend_size: int = 8) -> None:
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
