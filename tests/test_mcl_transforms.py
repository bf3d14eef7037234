"""MCL preprocessing on generated media in the real formats: point clouds (npz), video (mp4
written with PyAV, known frame colours), audio (wav sine tones); and their bad inputs."""
from __future__ import annotations

import io
import random

import numpy as np
import pytest

from fusionweave.pipelines.fixtures.sample_mcl import encode_mp4
from fusionweave.transforms.mcl import audio_fbank, pointcloud, video_frames


def npz(points: np.ndarray, key: str = "arr_0") -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{key: points})
    return buf.getvalue()


def test_point_cloud_unit_sphere_fps_and_determinism() -> None:
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(size=(10_000, 3)) * 3 + 7, rng.random((10_000, 3))], axis=1)
    out = pointcloud.prepare(npz(pts))
    assert out.shape == (8192, 6) and out.dtype == np.float32
    full = pointcloud.unit_sphere(pts)
    assert np.allclose(full[:, :3].mean(axis=0), 0, atol=1e-4)
    assert np.sqrt((full[:, :3] ** 2).sum(axis=1)).max() == pytest.approx(1.0, abs=1e-6)
    assert np.array_equal(out, pointcloud.prepare(npz(pts)))  # fixed start: the same points every time
    idx = pointcloud.farthest_point_sample(full, 64)
    assert len(set(idx.tolist())) == 64
    chosen = full[idx, :3]
    gaps = np.sqrt(((chosen[:, None] - chosen[None]) ** 2).sum(-1)) + np.eye(64) * 9
    rand = full[rng.choice(len(full), 64, replace=False), :3]
    rgaps = np.sqrt(((rand[:, None] - rand[None]) ** 2).sum(-1)) + np.eye(64) * 9
    assert gaps.min() > rgaps.min()  # farthest-point sampling spreads the points out
    few = pointcloud.prepare(npz(pts[:100]), n=256)
    assert few.shape == (256, 6)  # fewer points than asked: all of them, repeated


def test_point_cloud_bad_inputs() -> None:
    bad = np.zeros((10, 3))
    bad[3, 1] = np.nan
    with pytest.raises(pointcloud.PointCloudError, match="NaN"):
        pointcloud.prepare(npz(bad))
    with pytest.raises(pointcloud.PointCloudError, match="no 'arr_0'"):
        pointcloud.prepare(npz(np.zeros((10, 3)), key="points"))
    with pytest.raises(pointcloud.PointCloudError, match=r"\(N, >=3\)"):
        pointcloud.prepare(npz(np.zeros((10, 2))))


def mp4(colours: list[tuple[int, int, int]], size: int = 64) -> bytes:
    return encode_mp4((np.full((size, size, 3), c, np.uint8) for c in colours), size)


def test_video_frames_order_rgb_and_sampling() -> None:
    colours = [(min(255, 12 * i), 40, 200) for i in range(20)]  # red rises frame by frame; blue stays high
    frames, idx = video_frames.sample(mp4(colours), train=False, seed=0)
    assert idx == [0, 5, 10, 14, 19] and len(frames) == 5  # even, both ends
    for f, i in zip(frames, idx):
        assert f.shape == (224, 224, 3)
        r, g, b = f.reshape(-1, 3).mean(axis=0)
        assert abs(r - colours[i][0]) < 12 and b > 150 and b > r - 60  # RGB order, not BGR
    _, t = video_frames.sample(mp4(colours), train=True, seed=3)
    assert len(t) == 5 and t[4] == t[3]  # the last repeated
    assert all(i < 10 for i in t[:2]) and all(i >= 10 for i in t[2:4]) and t == sorted(t)
    assert video_frames.sample(mp4(colours), train=True, seed=3)[1] == t  # seeded
    with pytest.raises(video_frames.VideoError, match="undecodable"):
        video_frames.sample(b"\x00\x00\x00\x18ftypmp42 broken", train=False, seed=0)


def wav(seconds: float, rate: int = 16_000, freq: float = 1000.0, channels: int = 1) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([x] * channels, axis=1), rate, format="WAV")
    return buf.getvalue()


def test_audio_fbank_shape_normalisation_chunks() -> None:
    feats = audio_fbank.fbank(audio_fbank.decode_mono_16k(wav(3.0)))
    assert feats.shape == (1 + (48_000 - 400) // 160, 128)  # Kaldi framing (snip edges)
    peak = int(np.median(feats.argmax(axis=1)))
    other = audio_fbank.fbank(audio_fbank.decode_mono_16k(wav(3.0, freq=3000.0)))
    assert int(np.median(other.argmax(axis=1))) > peak  # a higher tone peaks in a higher mel bin
    norm = audio_fbank.normalise(feats)
    assert np.allclose(norm, (feats - 15.41663) / (2 * 6.55582))
    resampled = audio_fbank.fbank(audio_fbank.decode_mono_16k(wav(3.0, rate=44_100, channels=2)))
    assert resampled.shape == feats.shape  # stereo 44.1 kHz -> mono 16 kHz
    assert np.mean(resampled.argmax(axis=1) == feats.argmax(axis=1)) > 0.95  # the tone lands in the same bin
    long = audio_fbank.prepare(wav(12.0), train=False, seed=0)
    assert long.shape == (3, 512, 128)  # 1,198 frames: three chunks, the last padded
    train = audio_fbank.prepare(wav(12.0), train=True, seed=0)
    assert train.shape == (2, 512, 128)
    short = audio_fbank.chunks(norm, train=True, rng=random.Random(0))
    assert short.shape == (2, 512, 128) and np.array_equal(short[0], short[1])  # one chunk, repeated


def test_audio_bad_inputs() -> None:
    with pytest.raises(audio_fbank.AudioError, match="zero-length"):
        audio_fbank.decode_mono_16k(wav(0.0))
    with pytest.raises(audio_fbank.AudioError, match="undecodable"):
        audio_fbank.decode_mono_16k(b"RIFF\x00\x00garbage")
    with pytest.raises(audio_fbank.AudioError, match="shorter than one"):
        audio_fbank.fbank(np.zeros(100, np.float32))


def test_fbank_matches_kaldi_native_fbank() -> None:
    """Kaldi compatibility: where kaldi-native-fbank accepts the settings (80 bins), ours agrees."""
    import kaldi_native_fbank as knf

    x = audio_fbank.decode_mono_16k(wav(1.5, freq=440.0))
    x = x + 0.01 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16_000
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    ref = knf.OnlineFbank(opts)
    ref.accept_waveform(16_000, (x * 32768).tolist())
    ref.input_finished()
    want = np.stack([ref.get_frame(i) for i in range(ref.num_frames_ready)])
    got = audio_fbank.fbank(x, num_bins=80)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-2


def test_video_clip_reports_frames_and_duration() -> None:
    colours = [(i * 20, 255 - i * 20, 40) for i in range(12)]
    c = video_frames.clip(mp4(colours), train=False, seed=0)
    assert c.total == 12 and c.seconds == pytest.approx(1.2, abs=0.11) and c.indices == [0, 3, 6, 8, 11]
    t = video_frames.clip(mp4(colours), train=True, seed=1, frames=5)
    assert all(i < 6 for i in t.indices[:2]) and all(i >= 6 for i in t.indices[2:4]) and t.indices[4] == t.indices[3]
    with pytest.raises(video_frames.VideoError) as err:
        video_frames.clip(b"not a video at all", train=False, seed=0)
    assert err.value.reason == "video_undecodable"


def test_audio_rate_floor_and_reasons() -> None:
    with pytest.raises(audio_fbank.AudioError) as err:
        audio_fbank.decode_mono_16k(wav(1.0, rate=8000), min_rate=16_000)
    assert err.value.reason == "audio_rate_too_low"
    assert len(audio_fbank.decode_mono_16k(wav(1.0, rate=8000))) == 16_000  # without a floor: resampled
    with pytest.raises(audio_fbank.AudioError) as err:
        audio_fbank.decode_mono_16k(wav(0.0))
    assert err.value.reason == "audio_empty"


def test_modelnet_text_points() -> None:
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(300, 6))
    text = "\n".join(",".join(f"{v:.6f}" for v in p) for p in pts).encode()
    out = pointcloud.prepare(text, n=128, text=True)
    assert out.shape == (128, 6) and np.sqrt((out[:, :3] ** 2).sum(1)).max() <= 1.0 + 1e-5
    with pytest.raises(pointcloud.PointCloudError) as err:
        pointcloud.prepare(b"1,2\n3,oops\n", text=True)
    assert err.value.reason in ("points_unreadable", "points_bad_shape")
    bad = np.zeros((10, 3))
    bad[0, 0] = np.inf
    with pytest.raises(pointcloud.PointCloudError) as err:
        pointcloud.prepare(npz(bad))
    assert err.value.reason == "points_nonfinite"


def test_point_cloud_unreadable_files_are_reasons() -> None:
    good = npz(np.zeros((10, 3)))
    for data in (good[: len(good) // 2], (lambda b: (np.save(b, np.zeros((10, 3))), b.getvalue())[1])(io.BytesIO()),
                 b"PK\x03\x04 garbage"):
        with pytest.raises(pointcloud.PointCloudError) as err:
            pointcloud.prepare(data)
        assert err.value.reason == "points_unreadable"
