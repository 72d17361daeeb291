"""The Python API end to end on the bundled digits: fit, review the worst suspects, predict.

    python examples/python_api.py [OUT_DIR]
"""

import sys

import labelclean
from labelclean.demo import DEMO_SETTINGS, write_digits

out = sys.argv[1] if len(sys.argv) > 1 else "labelclean-example"
data = write_digits(out, noise=0.3, seed=1)  # images/ + labels.csv with 30% of labels flipped
run = labelclean.fit(data.images_dir, data.labels_csv, f"{out}/run", overwrite=True, **DEMO_SETTINGS)

errors = run.export(threshold=0.5, only_errors=True, sort="clean_prob")
print(f"{len(errors)} of {len(run.export())} labels look wrong; the ten most certain:")
print(errors[["path", "given_label", "suggested_label", "clean_prob"]].head(10).to_string(index=False))
print("Chosen from the data:", run.config["auto"]["noise"], run.config["auto"]["settings"])

print(run.predict([data.images_dir / "0000.png", data.images_dir / "0001.png"], top_k=2))
