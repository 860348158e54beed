"""Fit a Gaussian mixture, compare its LOO summary with ArviZ's PSIS-LOO, plot and save.

Writes report.png, result.json, model.npz and result.npz to the folder
named by the FG_INFLUENCE_OUTPUT environment variable, or else to a
temporary directory that is removed at the end. The folder is not a
command-line argument because the test suite runs this script with
pytest's arguments in sys.argv. Needs the ``test`` extra for ArviZ and
Matplotlib.
"""

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fg_influence import GaussianMixture
from fg_influence.datasets import load_faithful
from fg_influence.influence.loo import psis_loo
from fg_influence.io import load, save
from fg_influence.plotting import save_report


def main(output: Path) -> None:
    # Fit on standardized data, rows labelled by the data set's row names.
    dataset = load_faithful()
    frame = pd.DataFrame(dataset.data, columns=list(dataset.columns), index=list(dataset.row_labels))
    frame = (frame - frame.mean()) / frame.std(ddof=0)
    model = GaussianMixture(n_components=2, random_state=0).fit(frame)
    result = model.influence()

    # LOO from the divided posteriors against PSIS-LOO from draws of q.
    loo = result.loo_summary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.23 announces its 1.0 refactor
        psis = psis_loo(model.posterior_, n_draws=1000, random_state=0)
    print(f"{'':10s}{'elpd_loo':>10s}{'SE':>8s}{'p_loo':>8s}")
    print(f"{'division':10s}{loo.elpd_loo:10.2f}{loo.se:8.2f}{loo.p_loo:8.2f}")
    print(f"{'PSIS-LOO':10s}{psis.elpd_loo:10.2f}{psis.se:8.2f}{psis.p_loo:8.2f}")
    gap = np.abs(psis.loo_i.values - result.loo_log_predictive)
    print(f"largest pointwise gap {gap.max():.3f}; largest Pareto k {psis.pareto_k.values.max():.2f}")

    # Exact refits of the ten most influential rows, then the report.
    result.compute_exact(10)
    accuracy = result.accuracy()
    print(f"Spearman correlation with exact refits of the top 10 rows: {accuracy['spearman']:.3f}")
    print(result.summary_frame().loc[result.labels[int(result.top(1)[0])], ["kl", "exact_kl"]])
    save_report(result, output / "report.png", column_names=["eruptions (standardized)",
                                                                "waiting (standardized)"])
    result.to_json(output / "result.json")
    model.save(output / "model.npz")
    save(result, output / "result.npz")

    # A reloaded model gives the same numbers bit for bit.
    reloaded = load(output / "model.npz").influence()
    np.testing.assert_array_equal(reloaded.kl, result.kl)
    print(f"Wrote {', '.join(sorted(p.name for p in output.iterdir()))} to {output}")


if __name__ == "__main__":
    if os.environ.get("FG_INFLUENCE_OUTPUT"):
        target = Path(os.environ["FG_INFLUENCE_OUTPUT"])
        target.mkdir(parents=True, exist_ok=True)
        main(target)
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(Path(folder))
