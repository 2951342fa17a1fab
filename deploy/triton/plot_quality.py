"""`te model --plot FILE.png`: a reliability diagram and a score histogram per model version.

te computes the numbers (the same QualitySummary as its table) and writes them as JSON; this script only
draws them. Run by te with the project's train venv (.dev/venv-train, `make train-venv`) or TE_PYTHON:

    python plot_quality.py DATA.json OUT.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(data_path, out_path):
    with open(data_path) as f:
        data = json.load(f)
    versions = data["versions"]
    fig, (rel, hist) = plt.subplots(1, 2, figsize=(12, 5))
    rel.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for v in versions:
        bins = v["reliability"]
        label = (f"v{v['version']}: n={v['outcomes']}, Brier {v['brier']:.4f} (constant {v['constant_brier']:.4f}), "
                 f"ECE {v['ece']:.3f}") if v["brier"] is not None else f"v{v['version']}: n={v['outcomes']}"
        line, = rel.plot([b["mean_score"] for b in bins], [b["eligible_rate"] for b in bins], marker="o", label=label)
        # Marker area follows the bin's share of outcomes, so a sparse bin does not look like evidence.
        total = max(1, sum(b["count"] for b in bins))
        rel.scatter([b["mean_score"] for b in bins], [b["eligible_rate"] for b in bins],
                    s=[20 + 400 * b["count"] / total for b in bins], color=line.get_color(), alpha=0.3)
        rel.axhline(v["base_rate"], color=line.get_color(), linestyle=":", linewidth=1)
        edges = v["histogram"]["edges"]
        hist.stairs(v["histogram"]["counts"], edges, label=f"v{v['version']}", linewidth=1.5)
    rel.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean score in bin", ylabel="eligible rate in bin",
            title="Reliability (10 equal-width bins; dotted: base rate)")
    rel.legend(fontsize=8, loc="upper left")
    hist.set(xlim=(0, 1), xlabel="score", ylabel="outcomes", title="Score histogram")
    hist.legend(fontsize=8)
    fig.suptitle(data.get("title", "model quality from outcomes"))
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_quality.py DATA.json OUT.png")
    main(sys.argv[1], sys.argv[2])
