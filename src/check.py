"""Scan a dataset before training: `python -m src.check data=<name> [data.data_dir=...] [weights=...]`.

Prints, per split, the number of image/mask pairs, the image sizes, the label values stored in the masks and the
share of ignored pixels, then the pixel frequency of every class in the training split. Every problem is listed
with its file (missing image/mask pairs, image/mask size mismatches, colour masks where index masks are expected,
label values outside the classes and the ignore index); any problem makes the exit status 1 (2 for a wrong
command or a missing dataset root).

`weights=median_frequency` (SegNet: median(freq) / freq_c, freq_c = pixels of class c / pixels of the images in
which c occurs) or `weights=inverse_log` (ENet: 1 / ln(1.02 + p_c), p_c = the class's share of labelled pixels)
writes class weights from the training split as JSON to `weights_file`:
`{"dataset", "method", "class_names", "weights", "pixel_counts"}`. Classes never seen get weight 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.data.files import FilesDataModule
from src.data.scan import ScanResult, binary_mask_problem
from src.data.stats import METHODS, class_weights, describe_sizes, describe_values, scan_all
from src.errors import UserError, exit_on_user_error
from src.run import build_datamodule
from src.utils.io import write_json_new


def check(cfg: DictConfig) -> int:
    """Scan the dataset `cfg.data`; print the report; write weights if asked. Returns the exit status."""
    method = cfg.get("weights")
    if method is not None and method not in METHODS:
        raise UserError(f"weights={method}: use one of {', '.join(METHODS)} (or leave it out).")
    dm = build_datamodule(cfg, validate=False)
    if not isinstance(dm, FilesDataModule):
        raise UserError(f"data={cfg.data._target_} is not read from files; the check scans on-disk datasets.")
    splits = list(cfg.get("splits") or dm.splits())
    results: dict[str, ScanResult] = {}
    for split in splits:
        pairs = dm.pairs(split)
        data = dm.dataset_class(pairs.images, pairs.masks, None, ignore_index=dm.ignore_index, **dm.dataset_kwargs())
        print(f"scanning {dm.name} {split}: {len(data)} pairs in {dm.data_dir} ...", flush=True)
        result = scan_all(data, dm.num_classes, dm.ignore_index, int(cfg.get("workers") or 0))
        result.problems = pairs.problems + result.problems
        if len(data) == 0:
            result.problems.append(f"{dm.data_dir}: no image/mask pairs in the {split} split")
        elif split == "train" and (problem := binary_mask_problem(result, dm.class_names, dm.ignore_index)):
            result.problems.append(f"{dm.data_dir}: {problem}")
        results[split] = result

    print(f"\n{'split':<8}{'pairs':>8}  {'image sizes (count)':<44}{'stored label values':<24}{'ignored px':>10}")
    for split, r in results.items():
        total = int(r.pixel_counts.sum()) + r.ignored_pixels
        ignored = f"{100 * r.ignored_pixels / total:.1f}%" if total else "-"
        print(f"{split:<8}{r.count:>8}  {describe_sizes(r.sizes):<44}{describe_values(r.raw_values):<24}{ignored:>10}")

    train = results.get("train") or next(iter(results.values()))
    share = train.pixel_counts / max(int(train.pixel_counts.sum()), 1)
    print(f"\nclass pixel frequencies ({'train' if 'train' in results else splits[0]} split):")
    for c, name in enumerate(dm.class_names):
        print(f"  {c:>3} {name:<24}{int(train.pixel_counts[c]):>14} px {100 * share[c]:8.3f}%")
    unseen = [name for c, name in enumerate(dm.class_names) if train.pixel_counts[c] == 0]
    if unseen:
        print(f"warning: {len(unseen)} class(es) have no pixels in this split: {', '.join(unseen)}")

    problems = [(split, p) for split, r in results.items() for p in r.problems]
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for split, p in problems:
            print(f"  [{split}] {p}", file=sys.stderr)
        if method:
            print("no class weights written: fix the problems first", file=sys.stderr)
        return 1

    if method:
        weights = class_weights(train.pixel_counts, train.present_pixels, method)
        if unseen:
            print(f"warning: weight 0 for the classes never seen: {', '.join(unseen)}")
        out = Path(cfg.weights_file)
        write_json_new(  # whole or not at all; a different file already there is never replaced
            out,
            {
                "dataset": cfg.get("data_name") or dm.config_name,
                "method": method,
                "class_names": dm.class_names,
                "weights": [round(float(w), 6) for w in weights],
                "pixel_counts": [int(n) for n in train.pixel_counts],
            },
            "class-weight file",
            "Write to another file with weights_file=PATH (or delete this one to replace it).",
        )
        print(f"\n{method} class weights written to {out}")
        for name, w in zip(dm.class_names, weights):
            print(f"  {name:<24}{w:10.4f}")
    print("\nno problems found")
    return 0


def check_data_arg(argv: list[str]) -> None:
    """`data=` is required and must name a config of configs/data/ (Hydra would exit 1 with its own message)."""
    if any(a in ("-h", "--help", "--hydra-help", "--info", "-i") or a.startswith("--info") for a in argv):
        return
    names = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs" / "data").glob("*.yaml"))
    given = [a.split("=", 1)[1] for a in argv if a.startswith(("data=", "+data="))]
    if not given:
        raise UserError(f"data= is missing: python -m src.check data=<{'|'.join(names)}> data.data_dir=<its folder>")
    if given[-1] not in names:
        raise UserError(f"data={given[-1]}: no such dataset config (configs/data/); use one of {', '.join(names)}.")


@hydra.main(version_base="1.3", config_path="../configs", config_name="check.yaml")
def main(cfg: DictConfig) -> None:
    sys.exit(exit_on_user_error(check, cfg))


if __name__ == "__main__":
    exit_on_user_error(check_data_arg, sys.argv[1:])
    main()
