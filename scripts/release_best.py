"""Train the released configuration, predict the CS224N dev and test files, push it as a user would, check the push.

1. `hf-mtbert train scripts/configs/best_cpu60.yaml` (skipped with --skip-train when the checkpoint exists), timed.
2. `hf-mtbert predict --cs224n --splits dev,test` into results/best/predictions (the `*-test-student.csv` files have
   no labels; the dev files feed the confusion matrix and the scatter of `render_results.py`).
3. `hf-mtbert push` to a Hub: `--endpoint` (default: a local stand-in started here from tests/hub_server.py, since
   this machine has no internet; give https://huggingface.co and a token to publish for real).
4. In a process that cannot import hf_mtbert: `AutoModel.from_pretrained(repo_id, trust_remote_code=True)` and the
   three pipelines by repo id, compared with the same calls on the local folder.

Writes results/best/{eval_results.json, training_args.json, release.json, predictions/} and the rendered model card
to model_cards/mtbert-minilm-cs224n.md.

    HF_MTBERT_DATA_DIR=../shared/data/cs224n python scripts/release_best.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ["A gorgeous, witty, seductive movie.", "The plot is thin and the jokes fall flat.",
             "It is a film, and it has actors in it."]
PAIRS = [("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
         ("How do I learn Python quickly?", "What is the capital of Peru?")]
STS_PAIRS = [("A man is playing a guitar.", "A person plays an instrument."),
             ("A man is playing a guitar.", "A woman is slicing an onion.")]
# Runs twice: here on the local folder, and in a process where hf_mtbert cannot be imported, on the repo id.
CHECK = """
import json, sys
if sys.argv[3] == "hub":
    sys.modules["hf_mtbert"] = None  # a user without our package
import torch
from transformers import AutoModel, AutoTokenizer, pipeline
model_id, out_file = sys.argv[1], sys.argv[2]
sentences, pairs, sts_pairs = json.loads(sys.argv[4])
model = AutoModel.from_pretrained(model_id, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(model_id)
with torch.no_grad():
    logits = model(task="sst", **tokenizer(sentences, padding=True, return_tensors="pt")).logits
kw = dict(model=model_id, trust_remote_code=True)
out = {
    "model_class": type(model).__module__ + "." + type(model).__name__,
    "sst_logits": logits.tolist(),
    "sentiment-mt": pipeline("sentiment-mt", **kw)(sentences),
    "paraphrase-mt": pipeline("paraphrase-mt", **kw)([{"text": a, "text_pair": b} for a, b in pairs]),
    "similarity-mt": pipeline("similarity-mt", **kw)([tuple(p) for p in sts_pairs]),
}
if sys.argv[3] == "hub":  # the card as the Hub serves it (push renders it for the repo id)
    from huggingface_hub import hf_hub_download
    out["card"] = open(hf_hub_download(model_id, "README.md"), encoding="utf-8").read()
json.dump(out, open(out_file, "w"), indent=1)
"""


def run(cmd: list[str], env: dict | None = None) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def check_outputs(model_id: str, mode: str, env: dict, workdir: Path) -> dict:
    script, out = workdir / "check.py", workdir / f"check-{mode}.json"
    script.write_text(CHECK)
    run([sys.executable, str(script), model_id, str(out), mode, json.dumps([SENTENCES, PAIRS, STS_PAIRS])], env=env)
    return json.loads(out.read_text())


def same(a, b, tol: float = 1e-4) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return isinstance(b, (int, float)) and abs(a - b) <= tol
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "scripts/configs/best_cpu60.yaml"))
    parser.add_argument("--skip-train", action="store_true", help="use the trained checkpoint already there")
    parser.add_argument("--repo-id", default="hf-mtbert/mtbert-minilm-cs224n")
    parser.add_argument("--endpoint", default=None,
                        help="Hub to push to (default: a local stand-in; https://huggingface.co to publish)")
    parser.add_argument("--results", default=str(ROOT / "results/best"))
    parser.add_argument("--card", default=str(ROOT / "model_cards/mtbert-minilm-cs224n.md"),
                        help="where to write the model card as the Hub serves it")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    checkpoint = Path(config["output_dir"])
    results = Path(args.results)
    release = json.loads((results / "release.json").read_text()) if (results / "release.json").exists() else {}

    if not args.skip_train:
        start = time.time()
        run(["hf-mtbert", "train", args.config])
        release["train_wall_minutes"] = (time.time() - start) / 60
    elif not (checkpoint / "model.safetensors").exists():
        parser.error(f"--skip-train: no trained checkpoint in {checkpoint}")
    results.mkdir(parents=True, exist_ok=True)
    for name in ("eval_results.json", "training_args.json"):
        shutil.copy(checkpoint / name, results / name)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    release["dev_evaluations"] = [{k: v for k, v in log.items() if k == "step" or k.startswith("eval_")}
                                  for log in state["log_history"] if "eval_overall" in log]
    release["best_checkpoint"] = state.get("best_model_checkpoint")

    start = time.time()
    run(["hf-mtbert", "predict", str(checkpoint), "--cs224n", "--splits", "dev,test",
         "--output-dir", str(results / "predictions")])
    release["predict_minutes"] = (time.time() - start) / 60

    hub = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ)
        if args.endpoint is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from hub_server import FakeHub

            hub = FakeHub(tmp / "hub")
            env.update({"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "local-token"})
        else:
            env["HF_ENDPOINT"] = args.endpoint
        env.update({"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
                    "HF_HOME": str(tmp / "hf_home")})
        try:
            run(["hf-mtbert", "push", "--folder", str(checkpoint), "--repo-id", args.repo_id], env=env)
            local = check_outputs(str(checkpoint), "local", env, tmp)
            remote = check_outputs(args.repo_id, "hub", env, tmp)
        finally:
            if hub is not None:
                hub.stop()
    card = remote.pop("card")
    release.update({
        "repo_id": args.repo_id, "endpoint": args.endpoint or "local stand-in (tests/hub_server.py)",
        "hub_model_class": remote.pop("model_class"), "local_model_class": local.pop("model_class"),
        "hub_matches_local": same(remote, local), "hub_outputs": remote,
    })
    if not release["hub_matches_local"]:
        raise SystemExit(f"the pushed model answers differently from the local folder:\n{remote}\n{local}")
    Path(args.card).write_text(card)
    (results / "release.json").write_text(json.dumps(release, indent=1))
    print(json.dumps({k: v for k, v in release.items() if k != "hub_outputs"}, indent=1))


if __name__ == "__main__":
    main()
