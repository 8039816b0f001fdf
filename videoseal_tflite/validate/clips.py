"""Generated video clips (no download) and the video attacks of the report (issue #14): what a platform does to
an uploaded clip, done with PyAV's libx264 on the saved file.

- `pan_frames` / `photo_pan_frames` / `photo_pan_clip`: a pan across a photo (a held-out one by name), as frames
  or written to a clip;
- `reencode_clip`: decode and encode again at a CRF, optionally at a smaller size and/or dropping frames.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from videoseal_tflite.store.atomic import atomic_path


def pan_frames(photo: np.ndarray, width: int, height: int, count: int) -> list[np.ndarray]:
    """HxWx3 uint8 frames of a horizontal pan across `photo` (HxWx3 uint8), scaled so a frame covers 3/4 of
    its height."""
    scale = height / (0.75 * photo.shape[0])
    size = (max(int(photo.shape[1] * scale), width + count), int(photo.shape[0] * scale))
    big = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BICUBIC))
    top = (big.shape[0] - height) // 2
    return [np.ascontiguousarray(big[top : top + height, x : x + width])
            for x in np.linspace(0, big.shape[1] - width, count).astype(int)]  # fmt: skip


def photo_pan_frames(photo: str, width: int, height: int, count: int) -> list[np.ndarray]:
    """`pan_frames` across a held-out photo by name (`images.fullres_photo`)."""
    from videoseal_tflite.build.images import fullres_photo
    from videoseal_tflite.runtime.image import to_uint8

    return pan_frames(to_uint8(fullres_photo(photo).pixels), width, height, count)


def photo_pan_clip(
    folder: Path, photo: str, width: int, height: int, count: int, crf: int = 10, audio: bool = False
) -> Path:
    """`write_clip` of `photo_pan_frames`, named after the photo (matplotlib:grace_hopper.jpg -> grace_hopper.mp4)."""
    name = Path(photo.split(":")[-1]).stem
    return write_clip(Path(folder) / f"{name}.mp4", photo_pan_frames(photo, width, height, count), crf=crf, audio=audio)


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 24, crf: int = 10, audio: bool = False) -> Path:
    """H.264 yuv420p clip of `frames` (even sizes), written atomically; `audio` adds an AAC track (a 440 Hz sine,
    stereo, 48 kHz) as long as the video."""
    import av

    height, width = frames[0].shape[:2]
    with atomic_path(Path(path)) as tmp, av.open(str(tmp), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = out.add_stream("aac", rate=48000, layout="stereo") if audio else None
        for pixels in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            total = 48000 * len(frames) // fps
            for start in range(0, total, 1024):
                t = np.arange(start, min(start + 1024, total)) / 48000
                tone = np.repeat((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], 2, axis=0)
                chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
                chunk.sample_rate, chunk.pts = 48000, start
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return Path(path)


def reencode_clip(src: Path, dst: Path, crf: int, scale: float = 1.0, drop_every: int = 0) -> Path:
    """Decode `src` and encode again with libx264 (yuv420p, preset veryfast) at `crf`; `scale` < 1 resizes
    (bilinear, even sizes), `drop_every` = k drops every k-th frame (k=4: 25 % of the frames)."""
    import av

    with av.open(str(src)) as inp, atomic_path(Path(dst)) as tmp, av.open(str(tmp), "w", format="mp4") as out:
        vin = inp.streams.video[0]
        width = int(vin.codec_context.width * scale) // 2 * 2
        height = int(vin.codec_context.height * scale) // 2 * 2
        video = out.add_stream("libx264", rate=vin.average_rate, options={"crf": str(crf), "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        kept, time_base = 0, Fraction(1, 1) / Fraction(vin.average_rate or 24)
        for index, frame in enumerate(inp.decode(vin)):
            if drop_every and index % drop_every == drop_every - 1:
                continue
            again = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BILINEAR")
            again.pts, again.time_base = kept, time_base
            out.mux(video.encode(again))
            kept += 1
        out.mux(video.encode(None))
    return Path(dst)


# name -> (crf, scale, drop_every): the video rows of `validate --attacks`
VIDEO_ATTACKS: dict[str, tuple[int, float, int]] = {
    "h264_crf23": (23, 1.0, 0),
    "h264_crf30": (30, 1.0, 0),
    "h264_crf40": (40, 1.0, 0),
    "half_resolution": (23, 0.5, 0),
    "drop_25pct_frames": (23, 1.0, 4),
}
