"""The Python API end to end on the bundled digits: fit, review the worst suspects, predict.

    python examples/python_api.py [OUT_DIR] [--samples N] [--epochs E --warmup W]

By default it fits all 1,797 digits with the demo's settings (about a minute on a laptop CPU);
``--samples 200 --epochs 3 --warmup 1`` is a quick check that everything is installed.
"""

import argparse

import numpy as np

import labelclean
from labelclean.demo import DEMO_SETTINGS, write_digits

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out", nargs="?", default="labelclean-example", help="folder for the images, CSV and run")
parser.add_argument("--samples", type=int, default=None, help="use only the first N digits (default: all)")
parser.add_argument("--epochs", type=int, default=DEMO_SETTINGS["epochs"])
parser.add_argument("--warmup", type=int, default=DEMO_SETTINGS["warmup"])
args = parser.parse_args()

indices = np.arange(args.samples) if args.samples else None
data = write_digits(args.out, noise=0.3, seed=1, indices=indices)  # images/ + labels.csv, 30% of labels flipped
settings = {**DEMO_SETTINGS, "epochs": args.epochs, "warmup": args.warmup}
run = labelclean.fit(data.images_dir, data.labels_csv, f"{args.out}/run", overwrite=True, **settings)

errors = run.export(threshold=0.5, only_errors=True, sort="clean_prob")
print(f"{len(errors)} of {len(run.export())} labels look wrong; the ten most certain:")
print(errors[["path", "given_label", "suggested_label", "clean_prob"]].head(10).to_string(index=False))
print("Chosen from the data:", run.config["auto"]["noise"], run.config["auto"]["chosen"])

predicted = run.predict([data.images_dir / "0000.png", data.images_dir / "0001.png"], top_k=2)
print(predicted.to_string(index=False))
