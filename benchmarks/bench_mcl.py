"""The mcl stage per modality on Ray vs a bare loop of the same library calls.

ours: `pipelines.mcl.pipeline.run(..., stages=["mcl"])` on the embedded Ray engine (2 CPUs) over
      one training source of one modality: annotations parsed, media checked, each shard's items
      read, preprocessed as the originals do, and written as WebDataset shards with rejects and
      manifest lines.
bare: one Python loop in this process over the same files making the same calls (video: PyAV
      frame count + decode of the chosen frames at 224 + JPEG encode; audio: soundfile decode,
      resample to 16 kHz, Kaldi fbank, normalise, chunk, FLAC encode; points: np.load, unit
      sphere, farthest-point sampling to 8,192, np.save), nothing written.
Ours runs twice on the same engine: the first run includes starting the Ray workers (imports),
the second is the steady state; both are reported.

    python benchmarks/bench_mcl.py --videos 64 --clips 96 --clouds 32
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, parse  # noqa: E402
from fusionweave.orchestration.ray_engine import RayEngine  # noqa: E402
from fusionweave.pipelines.mcl import pipeline  # noqa: E402
from fusionweave.pipelines.mcl.config import MclConfig  # noqa: E402
from fusionweave.pipelines.mcl.media import audio_members, pointcloud_members, video_members  # noqa: E402
from fusionweave.pipelines.fixtures.sample_mcl import mp4, npz  # noqa: E402


def wav(seconds: float, freq: float, rate: int = 44_100) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([x, x], 1), rate, format="WAV")  # stereo 44.1 kHz, as AudioCaps clips
    return buf.getvalue()


def make_data(root: Path, videos: int, clips: int, clouds: int) -> dict[str, dict]:
    """One training source per modality, in the originals' formats."""
    v, a, p = root / "videos", root / "audio", root / "points"
    for d in (v, a, p):
        d.mkdir(parents=True, exist_ok=True)
    sizes = root / "sizes.json"
    if not sizes.exists() or json.loads(sizes.read_text()) != [videos, clips, clouds]:
        for i in range(videos):
            (v / f"video{i}.mp4").write_bytes(mp4(i, frames=150, size=320))  # 15 s at 10 fps, 320x320
        (v / "ann.json").write_text(json.dumps([{"video": f"video{i}.mp4", "caption": f"clip {i}"} for i in range(videos)]))
        for i in range(clips):
            (a / f"y{i}.wav").write_bytes(wav(10.0, 200.0 + 10 * i))
        (a / "train.csv").write_text("audiocap_id,youtube_id,start_time,caption\n" +
                                     "".join(f"{i},y{i},0,tone {i}\n" for i in range(clips)))
        for i in range(clouds):
            (p / f"o{i}_8192.npz").write_bytes(npz(i, n=10_000))
        (p / "cap3d.csv").write_text("".join(f"o{i},cloud {i}\n" for i in range(clouds)))
        sizes.write_text(json.dumps([videos, clips, clouds]))
    return {
        "video": {"name": "msrvtt", "format": "msrvtt_caption", "split": "train", "annotations": str(v / "ann.json"),
                  "media_root": str(v)},
        "audio": {"name": "audiocaps", "format": "audiocaps", "split": "train", "annotations": str(a / "train.csv"),
                  "media_root": str(a)},
        "pointcloud": {"name": "cap3d", "format": "cap3d", "split": "train", "annotations": str(p / "cap3d.csv"),
                       "media_root": str(p)},
    }


BARE = {"video": video_members, "audio": audio_members, "pointcloud": pointcloud_members}


def bare(cfg: MclConfig, modality: str) -> tuple[float, int]:
    """The same calls in one loop: read, preprocess (the member builders), no writing."""
    p = pipeline.plan(cfg)
    t0 = time.perf_counter()
    n = 0
    for r in p.records:
        data = (p.roots[r.source] / r.media).read_bytes()
        members, _ = BARE[modality](r, data, cfg)
        n += len(members)
    return time.perf_counter() - t0, len(p.records)


def ours(cfg: MclConfig, engine: RayEngine, out: Path) -> tuple[float, int]:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    res = pipeline.run(cfg, out, engine, stages=[pipeline.STAGE])
    return time.perf_counter() - t0, res[pipeline.STAGE]["rows_out"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=64)
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--clouds", type=int, default=32)
    ap.add_argument("--per-shard", type=int, default=8)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fusionweave-bench-mcl"))
    args = parse(ap, {"ci": {"videos": 4, "clips": 4, "clouds": 4, "per_shard": 2}})
    results = []
    sources = make_data(args.work / "data", args.videos, args.clips, args.clouds)
    units = {"video": "videos/s", "audio": "clips/s", "pointcloud": "point clouds/s"}
    with RayEngine(num_cpus=2, progress=False) as engine:
        for modality, src in sources.items():
            cfg = MclConfig.model_validate({"seed": 0, "shard_size": args.per_shard, "sources": [src],
                                            "stages": [{"modality": modality}]})
            tb, nb = bare(cfg, modality)
            # the first run pays for starting and importing the Ray workers; the second is the
            # steady state a long build runs in
            cold, no = ours(cfg, engine, args.work / f"out-{modality}")
            warm, _ = ours(cfg, engine, args.work / f"out-{modality}")
            assert nb == no, (nb, no)
            results.append(Result(f"mcl/{modality}", f"mcl stage on Ray, one {modality} source (steady state), vs a "
                                  f"bare loop making the same library calls, {no} items", no / warm, nb / tb,
                                  units[modality], ">= 0.8", {"first_run_ratio": round(tb / cold, 3)}))
    emit(results, args)


if __name__ == "__main__":
    main()
