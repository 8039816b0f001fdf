"""Watermark and read videos with the .tflite files alone: numpy + PyAV + the LiteRT interpreter, no torch.

This mirrors videoseal's `Videoseal.embed(imgs, msgs, is_video=True)` (video_mode 'repeat') and
`Videoseal.extract_message` step by step, streaming: frames are decoded one at a time, and nothing longer
than one frame plus the current key frame's watermark is ever held in memory.

embed_video(input, output, message, step_size K):
  1. decode frame i with PyAV -> RGB uint8 (YUV->RGB with the frame's own colour matrix and range)
  2. x_i = frame as float RGB in [0,1]                                                        [3,H,W]
  3. if i % K == 0 (a key frame):
       w = resize(embedder.tflite(resize(x_i, S x S), message), H x W)   bilinear, antialiased  [C,H,W]
     else: w is the last key frame's watermark, unchanged (videoseal `repeat`: one watermark per K frames)
  4. y_i = clamp(scaling_i * x_i + scaling_w * JND(x_i) * w, 0, 1)   JND of frame i itself, at full size,
     when the card has attenuation (`runtime.blend`), then rounded to uint8. Without JND (scaling_i 1, RGB
     watermark: the compact cards) the same sum runs in 0-255 units as uint8 frame + round(255 * scaling_w * w)
     in int16, the watermark upsampled once per key frame (`_additive_delta`; 1 value in 240,000 one level off)
  5. odd width/height: one column/row is added on the right/bottom by repeating the edge pixels, because
     H.264 in yuv420p needs even sizes; the output is then (W+1) x (H+1) with the picture untouched (no
     pixel of the input is dropped, and the detector sees the whole watermark)
  6. RGB -> yuv420p with the input's colour matrix and range (tags copied), libx264 at --crf/--preset;
     presentation timestamps and the stream time base copied (variable frame rate stays variable; the time base
     as far as the container allows: .mp4/.mov keep any of >= 10000 ticks/s, .mkv always counts milliseconds),
     the display rotation copied (a flip in the display matrix is not), audio streams copied packet by packet
     (not re-encoded), container and stream metadata (title, language, ...) copied
     step 6 runs on a second thread, one frame behind steps 1-5 (the container itself is only touched from the
     main thread); the file is byte for byte what the same steps in one thread write
  7. written to a temp file beside the output, renamed at the end: an error or Ctrl-C leaves no output
  8. what the output cannot hold is named in `VideoEmbedResult.notes` (`format_notes`): an input deeper than 8 bits,
     with chroma other than 4:2:0 or alpha, or in a codec other than H.264 gives one line, e.g. "input is 10-bit
     yuv420p10le HEVC; the output is 8-bit yuv420p H.264"; odd sizes give the padding line
Memory stays bounded by two frames, the key frame's watermark and libx264's lookahead (peak RSS 298 and 304 MB
for 720p clips of 144 and 288 frames at preset veryfast, 502 MiB for 60 s of 1080p).
detect_video(input, every=N, aggregation):
  1. decode every N-th frame -> x as float RGB in [0,1]
  2. x_s = resize(x, S x S)   bilinear WITHOUT antialiasing: `extract_message` passes antialias=False
  3. bit_logits_f = detector.tflite(x_s)                                                     [F,nbits]
     when the card declares its watermark tile (and not --no-resync; `TileTracker`): the codec drags the tile
     with the picture in P frames, so x_s is sampled at the 3 x 3 shifts 0.5 px apart (at S) around the last
     frame's, within 1 px of the grid, and the most confident reading is kept; cards without a tile (videoseal's
     own) read at the grid only, as `extract_message` does
  4. soft bits = aggregate over frames (videoseal's `extract_message`):
       avg          mean_f(p_f)
       squared_avg  mean_f(p_f * |p_f|)
       l1norm_avg   mean_f(p_f * ||p_f||_1)
       l2norm_avg   mean_f(p_f * ||p_f||_2)
  5. bit k = soft_bit_k > 0

The watermark is embedded in the stored (coded) orientation; a display rotation is metadata only. A tool
that re-encodes with the rotation applied to the pixels (ffmpeg's default autorotate does) turns the frames,
and the detector, which is not rotation invariant, then reads them turned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np
from PIL import Image

from videoseal_tflite.errors import InvalidMessage, InvalidOption, InvalidVideo, UnsupportedOutput

if TYPE_CHECKING:  # PyAV is imported where it is used (a still-image user never loads it)
    from av.video.stream import VideoStream
from videoseal_tflite.runtime.image import Detector, Embedder, blend, each_plane, resize_bilinear, to_uint8

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
# H.264 + copied audio: containers that hold both (webm only takes VP8/VP9/AV1)
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
CRF_RANGE = (0, 51)  # libx264's constant rate factor; the CLI checks it when parsing, the Python API here
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
AGGREGATIONS = ("avg", "squared_avg", "l1norm_avg", "l2norm_avg")
DEFAULT_STEP_SIZE = 4  # videoseal's Videoseal(step_size=4)
# tags the muxer writes itself; copying them would describe the input file, not ours
_MUXER_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "creation_time"}
_IMAGE_DEMUXERS = ("image2", "_pipe", "gif", "apng", "webp")


def is_video_path(path: Path) -> bool:
    """True for a video: by extension (.mp4 .m4v .mov .mkv .webm .avi), else by asking PyAV (a demuxer for moving
    pictures, not an image reader). Image extensions are never videos."""
    from videoseal_tflite.runtime.image_io import IMAGE_SUFFIXES

    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix in IMAGE_SUFFIXES or not Path(path).is_file():
        return False
    import av

    try:
        with av.open(str(path)) as container:
            name = container.format.name
            return bool(container.streams.video) and not any(tag in name for tag in _IMAGE_DEMUXERS)
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return False


def card_step_size(meta: dict) -> int:
    """The card's `videoseal_step_size`, which every .tflite's metadata carries (`step_size`); videoseal's default 4
    for a file that does not."""
    step = meta.get("step_size")
    return int(step) if isinstance(step, int) and step > 0 else DEFAULT_STEP_SIZE


def plain_resize(frame: np.ndarray, size: int, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """HxWx3 uint8 RGB -> [3,size,size] float32 in [0,1] as torch's `F.interpolate(frame / 255, mode='bilinear',
    align_corners=False, antialias=False)` gives it (`extract_message`'s resize): each output pixel mixes the 2x2
    input pixels around its centre, whatever the scale. `shift` (dx, dy), in output pixels, moves the sampling
    grid (edges repeat); (0, 0) is torch's exactly."""
    return _FrameSampler(frame, size)(shift)


def _source_index(n_in: int, n_out: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's area_pixel_compute_source_index + guard_index_and_lambda, in float32 like torch's CPU kernel;
    `shift` output pixels added to every source position (0: torch's)."""
    scale = np.float32(n_in / n_out)
    src = (np.arange(n_out, dtype=np.float32) + np.float32(0.5 + shift)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i1, lam


# ---- embedding --------------------------------------------------------------------------------------------


class _Stopwatch:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"decode": 0.0, "model": 0.0, "resize_blend": 0.0, "encode": 0.0}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


class _FrameWatermarker:
    """Steps 2-4 for one frame at a time; remembers the last key frame's watermark (videoseal `repeat`)."""

    def __init__(
        self, embedder: Embedder, message: np.ndarray, step_size: int, clock: _Stopwatch | None = None
    ) -> None:
        message = np.asarray(message, np.float32).reshape(-1)
        if message.size != embedder.nbits:
            raise InvalidMessage(f"message has {message.size} bits but the model takes {embedder.nbits}")
        if not isinstance(step_size, int) or step_size < 1:
            raise InvalidOption(f"step size must be a positive integer, got {step_size!r}")
        self.embedder, self.message, self.step_size = embedder, message.reshape(1, -1), step_size
        self.clock = clock or _Stopwatch()
        self.index = 0
        self.key_frames = 0
        self.watermark: np.ndarray | None = None
        self.delta: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> watermarked HxWx3 uint8. Key frames take `Embedder.watermark`'s steps, split here so that
        the model and the resizes are timed apart."""
        e, clock = self.embedder, self.clock
        key_frame = self.index % self.step_size == 0
        self.index += 1
        x: np.ndarray | None = None  # the frame as float: on key frames, and on every frame of the float blend
        if key_frame or self.delta is None:
            with clock("resize_blend"):
                x = frame.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        if key_frame and x is not None:
            with clock("resize_blend"):
                small = resize_bilinear(x, e.size, e.size)
            with clock("model"):
                w_small = e.model(image=small[None], message=self.message)["watermark"][0]
            with clock("resize_blend"):
                if self._additive(w_small):
                    self.delta = _additive_delta(w_small, x.shape[1], x.shape[2], 255 * e.scaling_w)
                else:
                    self.watermark = resize_bilinear(w_small, x.shape[1], x.shape[2])
            self.key_frames += 1
        with clock("resize_blend"):
            if self.delta is not None:  # the same blend in 0-255 HxWx3 int16 units: no per-frame transposes
                out = frame.astype(np.int16)
                out += self.delta
                np.clip(out, 0, 255, out=out)
                return out.astype(np.uint8)
            if x is None or self.watermark is None:  # not reached: the first frame is a key frame
                raise RuntimeError("video embed: a frame to blend before the first key frame")
            return to_uint8(blend(x, self.watermark, e.scaling_w, e.scaling_i, e.attenuation))

    def _additive(self, watermark: np.ndarray) -> bool:
        """The blend is a fixed addition: no JND, scaling_i 1, an RGB watermark (the compact cards)."""
        e = self.embedder
        return not e.attenuation and e.scaling_i == 1.0 and watermark.shape[0] == 3


def _additive_delta(watermark: np.ndarray, height: int, width: int, scale: float) -> np.ndarray:
    """round(upsampled (scale * watermark)) as HxWx3 int16. The upsampling is `runtime.resize_bilinear`'s (Pillow),
    each plane rounded straight into HxWx3; scaling the 128-px watermark before upsampling instead of after saves
    two passes over the full frame and moves 6 of 66 million values one level (24 key frames of a 720p pan). A
    frame plus it, clipped, is `to_uint8(blend(...))` except where the float sum sits at a rounding tie: on 8
    frames of a 720p pan (compact card) 93 of 22 million values, 1 in 240,000, were one level off."""
    delta = np.empty((height, width, watermark.shape[0]), np.int16)

    def plane_delta(c: int) -> None:
        scaled = np.ascontiguousarray(watermark[c] * np.float32(scale), dtype=np.float32)
        if scaled.shape != (height, width):
            scaled = np.asarray(Image.fromarray(scaled, mode="F").resize((width, height), Image.Resampling.BILINEAR))
        delta[..., c] = np.rint(scaled)

    each_plane(plane_delta, range(watermark.shape[0]))
    return delta


def watermark_frames(
    frames: Iterable[np.ndarray], embedder: Embedder, message: np.ndarray, step_size: int = DEFAULT_STEP_SIZE
) -> Iterator[np.ndarray]:
    """The pixel path of `embed_video` without the codec: HxWx3 uint8 RGB frames in, watermarked HxWx3 uint8 out,
    one per frame, lazily. Equal to videoseal's `Videoseal.embed(frames/255, msg, is_video=True)['imgs_w']`
    (video_mode 'repeat', step_size K) up to the .tflite's float error and the rounding to uint8."""
    watermarker = _FrameWatermarker(embedder, message, step_size)
    for frame in frames:
        yield watermarker(frame)


@dataclasses.dataclass(frozen=True)
class VideoEmbedResult:
    """What `embed_video` wrote. Seconds are wall time summed over frames per stage; `seconds_encode` is the time
    the main thread waited for the encoder thread (and flushed it), so the stages overlap and their sum can be less
    than the run's wall time less its setup."""

    output: Path
    frames: int
    key_frames: int  # frames the embedder ran on (ceil(frames / step_size))
    step_size: int
    fps: float  # the input's average frame rate (timestamps are copied, so variable rate stays variable)
    width: int  # of the output; one more than the input where the input's was odd (edge padding)
    height: int
    padded: bool
    audio_streams: int  # copied without re-encoding
    seconds_decode: float
    seconds_model: float
    seconds_resize_blend: float
    seconds_encode: float
    input_format: str = ""  # e.g. "10-bit yuv420p10le HEVC" (`StreamFormat.describe`)
    notes: tuple[str, ...] = ()  # what the output could not keep, one line each (`format_notes`)

    @property
    def seconds_total(self) -> float:
        return self.seconds_decode + self.seconds_model + self.seconds_resize_blend + self.seconds_encode

    def to_json(self) -> dict:
        return {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()},
            "seconds_total": self.seconds_total,
        }


# ffmpeg's codec names as people say them; any other is shown as ffmpeg names it
_CODEC_NAMES = {
    "h264": "H.264",
    "hevc": "HEVC",
    "vp8": "VP8",
    "vp9": "VP9",
    "av1": "AV1",
    "mpeg4": "MPEG-4 Part 2",
    "mpeg2video": "MPEG-2",
    "mpeg1video": "MPEG-1",
    "prores": "ProRes",
    "mjpeg": "Motion JPEG",
    "png": "PNG",
    "ffv1": "FFV1",
    "rawvideo": "raw video",
}


@dataclasses.dataclass(frozen=True)
class StreamFormat:
    """A video stream's coding as decoded: codec, pixel format, and what the pixel format holds."""

    codec: str  # ffmpeg's codec name: 'h264', 'hevc', 'vp9', 'av1', 'mpeg4', ...
    pix_fmt: str  # the decoded frames' pixel format: 'yuv420p', 'yuv420p10le', 'yuv444p', ...
    bits: int  # per sample, the deepest component
    chroma_420: bool  # chroma at half width and half height (4:2:0), or no chroma at all (gray)
    alpha: bool

    @classmethod
    def of(cls, codec: str, pix_fmt: str) -> StreamFormat:
        import av

        fmt = av.VideoFormat(pix_fmt, 64, 64)  # the planes' sizes at 64 x 64 give the subsampling
        components = list(fmt.components)
        colour = [c for c in components if not c.is_alpha]  # luma then chroma, or R G B, or a palette index
        if fmt.is_rgb or fmt.has_palette:
            chroma_420 = False
        else:  # gray has no chroma to lose
            chroma_420 = all(c.width == 32 and c.height == 32 for c in colour[1:])
        bits = max((c.bits for c in components), default=8)
        return cls(codec, pix_fmt, bits, chroma_420, len(colour) < len(components))

    def describe(self) -> str:
        return f"{self.bits}-bit {self.pix_fmt} {_CODEC_NAMES.get(self.codec, self.codec)}"


OUTPUT_STREAM = StreamFormat("h264", "yuv420p", 8, True, False)  # what `_Writer` encodes


def format_notes(source: StreamFormat, padded: bool = False) -> tuple[str, ...]:
    """What the output (8-bit yuv420p H.264, even sizes) cannot keep of the input, one line each: the coding when
    the input is deeper than 8 bits, has chroma other than 4:2:0 or alpha, or another codec (one line naming both
    ends); the padding of an odd size."""
    notes = []
    if source.bits > 8 or not source.chroma_420 or source.alpha or source.codec != OUTPUT_STREAM.codec:
        notes.append(f"input is {source.describe()}; the output is {OUTPUT_STREAM.describe()}")
    if padded:
        notes.append("odd frame size; one edge row/column was repeated to make it even (H.264 yuv420p)")
    return tuple(notes)


def output_format(path: Path) -> str:
    """The muxer for an output path; raises UnsupportedOutput for anything but .mp4/.m4v/.mov/.mkv."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UnsupportedOutput(
            f"output {path} must end in {', '.join(OUTPUT_FORMATS)} "
            f"(H.264 with the audio copied; '{suffix or 'no extension'}' is not supported)"
        )
    return OUTPUT_FORMATS[suffix]


def _open_input(path: Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise InvalidVideo(f"video not found: {path}")
    try:
        container = av.open(str(path), metadata_errors="replace")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InvalidVideo(f"{path} is not a readable video ({_ffmpeg_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise InvalidVideo(f"{path} has no video stream")
    return container


def _ffmpeg_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:160]


def _display_rotation(frame) -> int:
    """The display matrix's rotation, degrees counterclockwise (0: none). Read with `frame.rotation`, never through
    `frame.side_data`: PyAV 18 raises ValueError there on side data newer than it knows (FFmpeg 8's EXIF on MJPEG
    camera clips and PNG frames, MV-HEVC's view ids), and the half-built frame can crash the process when freed."""
    return int(frame.rotation)


def _rgb_frame(av_frame) -> np.ndarray:
    """A decoded frame -> HxWx3 uint8 RGB (PyAV uses the frame's own colour matrix and range tags)."""
    return av_frame.to_ndarray(format="rgb24")


def _pad_even(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


class _Writer:
    """The output container: H.264 stream configured from the first decoded frame, audio streams copied."""

    def __init__(self, tmp: Path, fmt: str, source, video_in, audio_in: list, crf: int, preset: str) -> None:
        import av

        self.container = av.open(str(tmp), "w", format=fmt)
        self.source, self.video_in, self.audio_in = source, video_in, audio_in
        self.crf, self.preset = crf, preset
        self.video: VideoStream | None = None  # set by start(), at the first decoded frame
        self.audio_map: dict[int, object] = {}
        self.pending_audio: list = []  # audio packets demuxed before the first video frame set up the header
        self.last_pts: int | None = None
        self.colour: dict[str, int] = {}
        self.pool = None  # the encoder thread (`frame`)
        self.in_flight = None  # the previous frame's encode

    @property
    def stream(self) -> VideoStream:
        """The output video stream; only after start()."""
        if self.video is None:
            raise RuntimeError("video writer: a frame before start()")
        return self.video

    def start(self, first_frame, width: int, height: int) -> None:
        """Configure every stream before the header is written (the display rotation lives in the header)."""
        import av

        vin = self.video_in
        rate = vin.average_rate or vin.guessed_rate or vin.base_rate or Fraction(30)
        video = self.container.add_stream("libx264", rate=rate, options={"crf": str(self.crf), "preset": self.preset})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if vin.time_base:
            video.time_base = vin.time_base  # the muxer keeps it where the container allows (mp4: >= 10000 ticks/s)
            video.codec_context.time_base = vin.time_base
        if vin.sample_aspect_ratio:
            video.codec_context.sample_aspect_ratio = vin.sample_aspect_ratio
        self.colour = {
            "colorspace": first_frame.colorspace,
            "color_range": first_frame.color_range,
            "color_primaries": first_frame.color_primaries,
            "color_trc": first_frame.color_trc,
        }
        for name, value in self.colour.items():
            setattr(video.codec_context, name, value)
        rotation = _display_rotation(first_frame)
        if rotation:
            video.set_display_rotation(rotation)
        video.metadata.update({k: v for k, v in vin.metadata.items() if k not in _MUXER_TAGS and k != "handler_name"})
        for stream in self.audio_in:
            out = self.container.add_stream_from_template(stream)
            out.metadata.update({k: v for k, v in stream.metadata.items() if k not in _MUXER_TAGS})
            self.audio_map[stream.index] = out
        self.container.metadata.update({k: v for k, v in self.source.metadata.items() if k not in _MUXER_TAGS})
        self.video = video
        try:
            self.container.start_encoding()
        except av.FFmpegError as exc:
            codecs = ", ".join(s.codec_context.name for s in self.audio_in) or "none"
            raise InvalidVideo(
                f"cannot write this video as {self.container.format.name} "
                f"(audio codec(s): {codecs}; try .mkv): {_ffmpeg_reason(exc)}"
            ) from None
        for packet in self.pending_audio:
            self._mux_audio(packet)
        self.pending_audio = []

    def audio(self, packet) -> None:
        if packet.dts is None:  # the demuxer's end-of-stream marker
            return
        if self.video is None:
            self.pending_audio.append(packet)
        else:
            self._mux_audio(packet)

    def _mux_audio(self, packet) -> None:
        packet.stream = self.audio_map[packet.stream.index]
        self.container.mux(packet)

    def frame(self, pixels: np.ndarray, source_frame) -> None:
        """Hand the frame to the encoder thread; first mux what the previous frame's encode gave (so at most one
        frame is in flight, and the container is only touched from this thread)."""
        pts = self._pts(source_frame)
        self._collect()
        self.in_flight = self._encoder().submit(self._encode, pixels, pts)

    def _encode(self, pixels: np.ndarray, pts: int) -> list:
        """RGB -> yuv420p (the input's colour matrix and range) -> libx264; run on the encoder thread."""
        import av

        out = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(
            format="yuv420p", dst_colorspace=self.colour["colorspace"], dst_color_range=self.colour["color_range"]
        )
        for name, value in self.colour.items():
            setattr(out, name, value)
        out.pts, out.time_base = pts, self.stream.codec_context.time_base
        return self.stream.encode(out)

    def _encoder(self):
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vst-encode")
        return self.pool

    def _collect(self) -> None:
        if self.in_flight is not None:
            packets, self.in_flight = self.in_flight.result(), None
            self.container.mux(packets)

    def _pts(self, source_frame) -> int:
        """The input's timestamp in the encoder's time base; made strictly increasing (x264 requires it)."""
        tb = self.stream.codec_context.time_base
        if source_frame.pts is not None and source_frame.time_base:
            pts = int(round(source_frame.pts * source_frame.time_base / tb))
        else:  # no timestamp (raw streams, some .avi): one frame duration after the last
            rate = self.stream.codec_context.framerate
            step = max(int(round(1 / (rate * tb))), 1) if rate else 1
            pts = 0 if self.last_pts is None else self.last_pts + step
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1
        self.last_pts = pts
        return pts

    def finish(self) -> None:
        self._collect()
        self.container.mux(self.stream.encode(None))
        self.container.close()
        self._stop_encoder()

    def abandon(self) -> None:
        with contextlib.suppress(BaseException):
            if self.in_flight is not None:
                self.in_flight.result()
        self._stop_encoder()
        with contextlib.suppress(Exception):
            self.container.close()

    def _stop_encoder(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


def embed_video(
    input_path: Path,
    output_path: Path,
    embedder: Embedder,
    message: np.ndarray,
    step_size: int = DEFAULT_STEP_SIZE,
    crf: int = 23,
    preset: str = "medium",
    progress: bool = True,
) -> VideoEmbedResult:
    """Watermark every frame of a video (steps 1-7 of the module docstring) and write H.264 yuv420p.

    Raises InvalidVideo (unreadable, truncated or frameless input), UnsupportedOutput (extension),
    InvalidMessage (wrong length); on any error or KeyboardInterrupt no output file is left.
    """
    from tqdm import tqdm

    from videoseal_tflite.store.atomic import atomic_path

    input_path, output_path = Path(input_path), Path(output_path)
    fmt = output_format(output_path)
    if not CRF_RANGE[0] <= int(crf) <= CRF_RANGE[1]:
        raise InvalidOption(f"--crf must be {CRF_RANGE[0]}-{CRF_RANGE[1]} (libx264), got {crf}")
    if preset not in X264_PRESETS:
        raise InvalidOption(f"--preset must be one of {', '.join(X264_PRESETS)}, got '{preset}'")
    clock = _Stopwatch()
    watermarker = _FrameWatermarker(embedder, message, step_size, clock)
    source = _open_input(input_path)
    with contextlib.closing(source), atomic_path(output_path) as tmp:
        video_in = source.streams.video[0]
        video_in.thread_type = "AUTO"
        audio_in = list(source.streams.audio)
        writer = _Writer(tmp, fmt, source, video_in, audio_in, int(crf), preset)
        with tqdm(
            total=video_in.frames or None,
            unit="frame",
            desc=f"watermark {input_path.name}",
            disable=not progress,
            leave=False,
        ) as bar:
            frames, (height, width), coding = _transcode(input_path, source, writer, watermarker, clock, bar)
    s = clock.seconds
    padded = width % 2 == 1 or height % 2 == 1
    return VideoEmbedResult(
        output_path,
        frames,
        watermarker.key_frames,
        step_size,
        float(video_in.average_rate or video_in.guessed_rate or 0),
        width + width % 2,
        height + height % 2,
        padded,
        len(audio_in),
        s["decode"],
        s["model"],
        s["resize_blend"],
        s["encode"],
        coding.describe(),
        format_notes(coding, padded),
    )


def _transcode(
    input_path: Path, source, writer: _Writer, watermarker: _FrameWatermarker, clock: _Stopwatch, bar
) -> tuple[int, tuple[int, int], StreamFormat]:
    """The streaming loop: demux, copy audio packets, decode + watermark + encode each video frame, then check that
    the input was whole. Returns (frames, input (height, width), the first frame's coding). The writer is closed on
    success, abandoned on any error (the caller's atomic_path then deletes the temp file)."""
    import av

    video_in = writer.video_in
    frames, packets = 0, 0
    size: tuple[int, int] | None = None
    coding: StreamFormat | None = None
    try:
        demuxed = source.demux(video_in, *writer.audio_in)
        while True:
            with clock("decode"):
                packet = next(demuxed, None)
                if packet is None:
                    break
                if packet.stream.type == "audio":
                    writer.audio(packet)
                    continue
                packets += packet.size > 0
                decoded = packet.decode()
            for av_frame in decoded:
                with clock("decode"):
                    rgb = _rgb_frame(av_frame)
                if size is None:
                    size = (rgb.shape[0], rgb.shape[1])
                    coding = StreamFormat.of(video_in.codec_context.codec.canonical_name, av_frame.format.name)
                    writer.start(av_frame, size[1] + size[1] % 2, size[0] + size[0] % 2)
                elif rgb.shape[:2] != size:
                    raise InvalidVideo(
                        f"{input_path}: frame size changes mid-stream ({size[1]}x{size[0]} -> "
                        f"{rgb.shape[1]}x{rgb.shape[0]}); not supported"
                    )
                marked = _pad_even(watermarker(rgb))
                with clock("encode"):
                    writer.frame(marked, av_frame)
                frames += 1
                bar.update(1)
        if frames == 0 or size is None or coding is None:
            raise InvalidVideo(f"{input_path} has no decodable video frames")
        if video_in.frames and packets < video_in.frames:
            raise InvalidVideo(
                f"{input_path} is truncated or damaged: {packets} of the {video_in.frames} "
                f"video packets its index lists could be read"
            )
        with clock("encode"):
            writer.finish()
    except av.FFmpegError as exc:
        writer.abandon()
        raise InvalidVideo(
            f"{input_path} could not be decoded after {frames} frame(s): {_ffmpeg_reason(exc)}"
        ) from None
    except BaseException:
        writer.abandon()
        raise
    return frames, size, coding


# ---- detection ---------------------------------------------------------------------------------------------


def aggregate(bit_logits: np.ndarray, aggregation: str = "avg") -> np.ndarray:
    """[F,nbits] per-frame bit logits -> [nbits] soft bits, as videoseal's `extract_message` aggregates them."""
    preds = np.asarray(bit_logits, dtype=np.float32)
    if preds.ndim != 2 or preds.shape[0] == 0:
        raise ValueError(f"need [frames, nbits] logits with at least one frame, got shape {preds.shape}")
    if aggregation == "avg":
        return preds.mean(axis=0)
    if aggregation == "squared_avg":
        return (preds * np.abs(preds)).mean(axis=0)
    if aggregation == "l1norm_avg":
        return (preds * np.abs(preds).sum(axis=1, keepdims=True)).mean(axis=0)
    if aggregation == "l2norm_avg":
        return (preds * np.sqrt((preds * preds).sum(axis=1, keepdims=True))).mean(axis=0)
    raise InvalidOption(f"unknown aggregation '{aggregation}'; choose one of {', '.join(AGGREGATIONS)}")


@dataclasses.dataclass(frozen=True)
class VideoDetection:
    """Read-out of a video: per analysed frame and aggregated over frames."""

    frame_indices: np.ndarray  # [F] decode-order index of each analysed frame
    bit_logits: np.ndarray  # [F,nbits] per analysed frame
    detection_logits: np.ndarray  # [F] the detector's column 0 per frame (see the card for whether it was trained)
    aggregation: str
    soft_bits: np.ndarray  # [nbits] aggregated
    frames_decoded: int
    frame_shifts: np.ndarray  # [F,2] (dx, dy) each frame was read at, px at the processing size (`TileTracker`)
    tracked: bool  # the tile was tracked (the card declares one, and resync was not turned off)

    @property
    def bits(self) -> np.ndarray:
        return self.soft_bits > 0

    def frame_bits(self) -> np.ndarray:
        return self.bit_logits > 0

    def bit_accuracy(self, message: np.ndarray) -> float:
        return float((self.bits == np.asarray(message).astype(bool)).mean())

    def frame_bit_accuracies(self, message: np.ndarray) -> np.ndarray:
        return (self.frame_bits() == np.asarray(message).astype(bool)[None]).mean(axis=1)


def frame_logits(
    frame: np.ndarray, detector: Detector, shift: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, float]:
    """One HxWx3 uint8 RGB frame -> ([nbits] bit logits, detection logit), read as `extract_message` reads it
    (non-antialiased bilinear resize to the detector's size); `shift` moves the sampling grid (`TileTracker`)."""
    return detector.logits(plain_resize(frame, detector.size, shift))


class _FrameSampler:
    """`plain_resize` of one frame at several shifts: only the rows it samples are converted to float, once per
    vertical shift."""

    def __init__(self, frame: np.ndarray, size: int) -> None:
        self.frame, self.size = frame, size
        self.rows: dict[float, np.ndarray] = {}  # vertical shift -> the rows it samples, [S,W,3] float

    def _rows(self, dy: float) -> np.ndarray:
        if dy not in self.rows:
            y0, y1, ly = _source_index(self.frame.shape[0], self.size, dy)
            top, bottom = (self.frame[i].astype(np.float32) / np.float32(255) for i in (y0, y1))
            self.rows[dy] = top * (1 - ly)[:, None, None] + bottom * ly[:, None, None]  # [S,W,3]
        return self.rows[dy]

    def __call__(self, shift: tuple[float, float]) -> np.ndarray:
        rows = self._rows(shift[1])
        x0, x1, lx = _source_index(self.frame.shape[1], self.size, shift[0])
        small = rows[:, x0, :] * (1 - lx)[None, :, None] + rows[:, x1, :] * lx[None, :, None]
        return np.ascontiguousarray(small.transpose(2, 0, 1), dtype=np.float32)


# Step 3 when the card declares its tile (issue #14). In a P frame the codec predicts each block from the previous
# frame moved by its motion vector, and at CRF 30 the residual that would put the static tile back is quantised
# away: the tile drifts with the picture, by up to ~1.5 px at the processing size over a pan's group of pictures.
DRIFT_STEP = 0.5  # px at the processing size between the shifts tried
DRIFT_REACH = 1.0  # the farthest shift tried from the grid, px at the processing size


class TileTracker:
    """Reads each frame at the sampling shift where the tile shows best: the 3 x 3 shifts DRIFT_STEP apart around
    the previous frame's (the first frame: around the grid), within DRIFT_REACH of the grid; the most confident
    reading (`resync.confidence`: the mean over bits of |tanh(logit / 2)|) is kept. The choice never sees a message."""

    def __init__(self, detector: Detector) -> None:
        self.detector, self.shift = detector, (0.0, 0.0)

    def candidates(self) -> list[tuple[float, float]]:
        steps = (-DRIFT_STEP, 0.0, DRIFT_STEP)
        near = {(_within_reach(self.shift[0] + dx), _within_reach(self.shift[1] + dy)) for dy in steps for dx in steps}
        return sorted(near)

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, float, tuple[float, float]]:
        from videoseal_tflite.runtime.resync import confidence

        sample = _FrameSampler(frame, self.detector.size)
        readings = {shift: self.detector.logits(sample(shift)) for shift in self.candidates()}
        self.shift = max(readings, key=lambda s: confidence(readings[s][0]))
        bits, detection = readings[self.shift]
        return bits, detection, self.shift


def _within_reach(value: float) -> float:
    return float(min(max(value, -DRIFT_REACH), DRIFT_REACH))


def _read(frames: Iterable[np.ndarray | None], detector: Detector, aggregation: str, bar=None) -> VideoDetection:
    """Steps 2-5 of detect_video over decoded frames; None marks a frame skipped by `every`."""
    tracker = TileTracker(detector) if detector.tile_period else None
    indices, logits, det, shifts = [], [], [], []
    count = 0
    for index, frame in enumerate(frames):
        count += 1
        if bar is not None:
            bar.update(1)
        if frame is None:
            continue
        bits, detection, shift = tracker(frame) if tracker else (*frame_logits(frame, detector), (0.0, 0.0))
        indices.append(index)
        logits.append(bits)
        det.append(detection)
        shifts.append(shift)
    if not logits:
        raise InvalidVideo("no video frames to read")
    stacked = np.stack(logits)
    return VideoDetection(
        np.array(indices),
        stacked,
        np.array(det, np.float32),
        aggregation,
        aggregate(stacked, aggregation),
        count,
        np.array(shifts, np.float32),
        tracker is not None,
    )


def _check_read_options(every: int, aggregation: str) -> None:
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise InvalidOption(f"--every must be a positive integer, got {every!r}")
    if aggregation not in AGGREGATIONS:
        raise InvalidOption(f"unknown aggregation '{aggregation}'; choose one of {', '.join(AGGREGATIONS)}")


def detect_frames(
    frames: Iterable[np.ndarray], detector: Detector, every: int = 1, aggregation: str = "avg"
) -> VideoDetection:
    """`detect_video` on frames already in memory (HxWx3 uint8 RGB), e.g. `watermark_frames`' output."""
    _check_read_options(every, aggregation)
    return _read((f if i % every == 0 else None for i, f in enumerate(frames)), detector, aggregation)


def decode_frames(input_path: Path, every: int = 1) -> Iterator[np.ndarray | None]:
    """Decode a video's frames one at a time as HxWx3 uint8 RGB; frames skipped by `every` come out as None
    (not converted to RGB). Raises InvalidVideo for unreadable or damaged input."""
    import av

    source = _open_input(Path(input_path))
    with contextlib.closing(source):
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        try:
            for av_frame in source.decode(stream):
                yield _rgb_frame(av_frame) if index % every == 0 else None
                index += 1
        except av.FFmpegError as exc:
            raise InvalidVideo(
                f"{input_path} could not be decoded after {index} frame(s): {_ffmpeg_reason(exc)}"
            ) from None
        if index == 0:
            raise InvalidVideo(f"{input_path} has no decodable video frames")


def detect_video(
    input_path: Path, detector: Detector, every: int = 1, aggregation: str = "avg", progress: bool = False
) -> VideoDetection:
    """Read the message from a video: per-frame logits of every `every`-th frame (decode order), aggregated
    over frames (steps 1-5 of the module docstring). Raises InvalidVideo for unreadable or frameless input."""
    from tqdm import tqdm

    _check_read_options(every, aggregation)
    with tqdm(unit="frame", desc=f"detect {Path(input_path).name}", disable=not progress, leave=False) as bar:
        return _read(decode_frames(input_path, every), detector, aggregation, bar)
