"""Interpretation figures, the HTML report (rendered in headless Chromium), predict and ONNX export."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from cifarlab.cli import main as cli_main
from cifarlab.data import load_dataset
from cifarlab.workflow import run_predictions
from cifarlab.workflow import build_report, interpret_run, run_onnx


def _png_shape(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.size


def test_interpretation_files_match_predictions(runs):
    info = interpret_run(runs["ab-s0"])
    out = runs["ab-s0"] / "interpretation"
    p = run_predictions(runs["ab-s0"])
    probs, labels = p.test_probs, p.test_labels
    pred = probs.argmax(1)
    with open(out / "confusion_matrix.csv") as f:
        rows = list(csv.reader(f))[1:]
    cm = np.array([[int(v) for v in r[1:]] for r in rows])
    assert cm.shape == (10, 10) and cm.sum() == len(labels)
    for t, q in zip(labels, pred):
        cm[t, q] -= 1
    assert not cm.any()  # every count accounted for by exactly one prediction
    losses = -np.log(probs[np.arange(len(labels)), labels])
    tl = info["top_losses"]
    assert [e["index"] for e in tl] == list(np.argsort(-losses, kind="stable")[:16])
    assert tl[0]["loss"] == pytest.approx(losses.max(), rel=1e-5)
    assert sum(info["reliability"]["count"]) == len(labels)
    saved = json.loads((out / "interpretation.json").read_text())
    assert saved["most_confused"] == info["most_confused"] and saved["ece"] == pytest.approx(info["ece"])
    for name in ("confusion_matrix.png", "reliability.png", "top_losses.png", "per_class.csv"):
        assert (out / name).is_file(), name
    w, h = _png_shape(out / "top_losses.png")
    assert w > 600 and h > 150  # 16 images in 2 rows of 8


def test_cifar100_interpretation_has_superclass_confusion(runs):
    info = interpret_run(runs["c100"])
    with open(runs["c100"] / "interpretation/superclass_confusion.csv") as f:
        ccm = np.array([[int(v) for v in r[1:]] for r in list(csv.reader(f))[1:]])
    p = run_predictions(runs["c100"])
    coarse = p.coarse_of_fine
    assert ccm.shape == (20, 20)
    assert np.trace(ccm) == (coarse[p.test_logits.argmax(1)] == coarse[p.test_labels]).sum()
    assert info["superclass_top1"] == pytest.approx(100 * np.trace(ccm) / ccm.sum())


def test_report_html_is_self_contained(runs, tmp_path):
    out = build_report([runs["ab-s0"], runs["ab-s1"], runs["lenet"]], tmp_path / "r.html", title="tiny")
    html = out.read_text()
    table = re.search(r'<table class="comparison">.*?</table>', html, re.S).group(0)
    assert table.count("<tr>") == 4                       # header + 3 runs
    for name in ("ab-s0", "ab-s1", "lenet"):
        assert f"<td>{name}</td>" in table
    assert "http://" not in html and "https://" not in html   # nothing fetched
    n_img = html.count('src="data:image/png;base64,')
    # forest plot, curves, 2 trade-offs, 3 x (confusion, reliability, top losses), counts, samples
    assert n_img == 1 + 1 + 2 + 9 + 2
    assert "Which differences are real" in html and "ab (2 seeds)" in html and ">baseline<" in html
    assert "uniform" in html and "greedy" in html         # validation split present: all three methods
    assert re.search(r"Test errors: \d+ of \d+ images wrong for every member", html)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CIFARLAB_REQUIRE_BROWSER"):
        pytest.fail("CIFARLAB_REQUIRE_BROWSER is set but no Chromium is installed (.ci/run installs Debian's)")
    pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package)")


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_report_renders_in_headless_chromium(runs, tmp_path):
    exe = _chromium()
    out = build_report([runs["ab-s0"], runs["c100"]], tmp_path / "report.html")
    url = out.resolve().as_uri()
    dom = subprocess.run([exe, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'ud1'}", "--virtual-time-budget=5000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert m, "the page's load script did not run"
    loaded, total = int(m.group(1)), int(m.group(2))
    assert total >= 10 and loaded == total                   # every embedded figure decoded
    assert dom.count("<tr>") >= 3 and "airbench94" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([exe, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'ud2'}", "--window-size=1200,2400",
                    f"--screenshot={shot}", url], capture_output=True, timeout=120)
    from PIL import Image
    px = np.asarray(Image.open(shot).convert("L"))
    assert px.shape == (2400, 1200) and px.std() > 20        # text and figures, not a blank page


def test_cli_report_and_compare_dry_run(runs, tmp_path, capsys):
    assert cli_main(["report", str(runs["ab-s0"]), str(runs["lenet"]), "--out", str(tmp_path / "x.html")]) == 0
    assert f"wrote {tmp_path / 'x.html'}" in capsys.readouterr().out
    page = (tmp_path / "x.html").read_text()
    for r in ("ab-s0", "lenet"):   # both runs, with their test top-1 as results.json has it
        top1 = json.loads((runs[r] / "results.json").read_text())["test"]["top1"]
        assert r in page and f"{top1:.2f}" in page
    assert page.count("<img") >= 6 and "Comparison" in page and "Interpretation" in page
    assert cli_main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    suite = tmp_path / "s.yaml"
    suite.write_text("name: dry\nruns:\n  - name: ab\n    seeds: [0, 1]\n  - name: le\n    model: lenet\n")
    assert cli_main(["compare", str(suite), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["ab-s0", "airbench94"], ["ab-s1", "airbench94"], ["le", "lenet"]]
    assert not (tmp_path / "runs").exists() and not __import__("pathlib").Path("runs/dry").exists()  # nothing trained


# ------------------------------------------------------------------------------------------ predict
def _save(arr_hw3, path, mode=None, **kw):
    from PIL import Image
    img = Image.fromarray(arr_hw3)
    if mode:
        img = img.convert(mode)
    img.save(path, **kw)
    return path


def test_predict_any_size_and_mode_reports_bad_files(runs, tmp_path):
    from PIL import Image
    from cifarlab.workflow import predict_images
    ds = load_dataset("cifar10", runs["data10"], download=False)
    img0 = ds.test.images[0].transpose(1, 2, 0)
    d = tmp_path / "imgs"
    d.mkdir()
    _save(img0, d / "exact.png")
    big = np.asarray(Image.fromarray(img0).resize((200, 120)))
    _save(big, d / "big.jpg", quality=95)
    _save(img0, d / "gray.png", mode="L")
    _save(img0, d / "pal.gif", mode="P")
    _save(img0, d / "alpha.webp", mode="RGBA")
    _save(img0, d / "cmyk.jpg", mode="CMYK")
    Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)).save(d / "deep.png")
    _save(img0, d / "tiny.bmp")
    (d / "notes.txt").write_text("not an image")                       # skipped inside a folder
    good = (d / "big.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (tmp_path / "fake.png").write_text("hello")
    res = predict_images(runs["ab-s0"], [d, tmp_path / "truncated.jpg", tmp_path / "fake.png",
                                          tmp_path / "missing.png"], top_k=3)
    names = sorted(os.path.basename(p["file"]) for p in res["predictions"])
    assert names == sorted(["exact.png", "big.jpg", "gray.png", "pal.gif", "alpha.webp", "cmyk.jpg", "deep.png",
                            "tiny.bmp"])
    bad = {os.path.basename(e["file"]): e["error"] for e in res["errors"]}
    assert set(bad) == {"truncated.jpg", "fake.png", "missing.png"}
    assert "truncated" in bad["truncated.jpg"] and "not an image" in bad["fake.png"]
    for p in res["predictions"]:
        probs = [t["probability"] for t in p["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    # the exact 32x32 PNG of test image 0 gets the probabilities the test evaluation gave it
    exact = next(p for p in res["predictions"] if p["file"].endswith("exact.png"))
    probs0 = run_predictions(runs["ab-s0"]).test_probs[0]
    assert exact["top"][0]["index"] == int(probs0.argmax())
    assert exact["top"][0]["probability"] == pytest.approx(float(probs0.max()), abs=2e-3)


def test_predict_policy_pad_keeps_the_whole_image(runs, tmp_path):
    from cifarlab.data.images import load_image
    from cifarlab.workflow import predict_images
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (32, 80, 3), dtype=np.uint8)        # 80x32: center-crop drops most of it
    _save(wide, tmp_path / "wide.png")
    padded = load_image(tmp_path / "wide.png", 32, "pad")              # what --policy pad should feed the model
    _save(padded.transpose(1, 2, 0), tmp_path / "padded.png")
    probs = lambda path, policy: [t["probability"] for t in sorted(
        predict_images(runs["ab-s0"], [path], top_k=10, policy=policy)["predictions"][0]["top"],
        key=lambda t: t["index"])]
    assert probs(tmp_path / "wide.png", "pad") == pytest.approx(probs(tmp_path / "padded.png", None), abs=1e-6)
    assert probs(tmp_path / "wide.png", "pad") != pytest.approx(probs(tmp_path / "wide.png", "center-crop"), abs=1e-4)


def test_cli_predict_formats(runs, tmp_path, capsys):
    ds = load_dataset("cifar10", runs["data10"], download=False)
    _save(ds.test.images[1].transpose(1, 2, 0), tmp_path / "a.png")
    (tmp_path / "b.png").write_text("junk")
    assert cli_main(["predict", str(runs["ab-s0"]), str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--json"]) == 0
    cap = capsys.readouterr()
    assert len(json.loads(cap.out)["predictions"]) == 1 and "skipped" in cap.err and "b.png" in cap.err
    assert cli_main(["predict", str(runs["ab-s0"]), str(tmp_path / "a.png"), "--csv", "--top-k", "2"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0] == ["file", "rank", "class", "probability"] and len(rows) == 3
    assert cli_main(["predict", str(runs["ab-s0"]), str(tmp_path / "b.png")]) == 2


# ------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("run", ["ab-s0", "lenet"])
def test_onnx_export_matches_pytorch(runs, tmp_path, run):
    from cifarlab.evaluation.metrics import predict_logits
    from cifarlab.workflow import export_onnx
    from cifarlab.workflow import load_run_model
    ds = load_dataset("cifar10", runs["data10"], download=False)
    info = export_onnx(runs[run], tmp_path / "m.onnx", check_images=ds.test.images)
    assert info["max_abs_diff"] < 1e-3 and info["argmax_agreement"] == 100.0
    # the exported graph (normalization inside) gives the run's own no-TTA test logits
    cfg, model, results = load_run_model(runs[run], device=torch.device("cpu"))
    mean = torch.tensor(results["normalization"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(results["normalization"]["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(ds.test.images).float() / 255 - mean) / std
    ref, _ = predict_logits(model.float(), [(x, torch.zeros(len(x)))], tta=0)
    got = run_onnx(tmp_path / "m.onnx", ds.test.images)
    assert got.shape == (60, 10)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-3)
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["classes"])[0] == "airplane"


def test_onnx_export_resizes_inside_the_graph_at_batch_size_one(runs, tmp_path):
    """A run that upsamples to 40 px on the device: the graph takes 32x32 pixels, resizes inside,
    and gives PyTorch's logits for one image at a time."""
    import cifarlab
    from helpers import tiny_config
    from cifarlab.workflow import export_onnx, load_run_model
    run = cifarlab.train(tiny_config(runs["data10"], img_size=40, epochs=1, tta=0), run_dir=tmp_path / "r40")
    assert run.results["input_side"] == 40 and run.results["data_side"] == 32
    info = export_onnx(run, tmp_path / "m.onnx")
    assert info["input"] == [None, 3, 32, 32] and info["max_abs_diff"] < 1e-3
    one = load_dataset("cifar10", runs["data10"], download=False).test.images[:1]
    cfg, model, results = load_run_model(run, device=torch.device("cpu"))
    mean = torch.tensor(results["normalization"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(results["normalization"]["std"]).view(1, 3, 1, 1)
    x = torch.nn.functional.interpolate((torch.from_numpy(one).float() / 255 - mean) / std, size=(40, 40),
                                        mode="bilinear", align_corners=False)
    with torch.no_grad():
        ref = model.float().to(memory_format=torch.contiguous_format)(x).numpy()
    np.testing.assert_allclose(run_onnx(tmp_path / "m.onnx", one), ref, atol=1e-3)


def test_cli_export(runs, tmp_path, capsys):
    assert cli_main(["export", str(runs["ab-s1"]), "--onnx", "--out", str(tmp_path / "x.onnx")]) == 0
    out = capsys.readouterr().out
    diff = float(out.split("max abs logit diff ")[1].split(",")[0])
    assert diff < 1e-3 and "argmax agreement 100.0%" in out
    images = np.random.default_rng(1).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    assert run_onnx(tmp_path / "x.onnx", images).shape == (3, 10)   # a graph that runs, 10 classes
