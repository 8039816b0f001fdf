"""A payload that survives bit errors: data bits plus a BCH code (bchlib, the Linux kernel's BCH), in the card's bits.

A card that declares `payload_code: {m: M, t: T}` carries `data_bits = nbits - ecc_bits` bits of data, then the
`ecc_bits` parity bits of the binary BCH code over GF(2^M) that corrects T flipped bits. The code is shortened to
the card: the data are packed into whole bytes, left-padded with zeros that are never sent. For the 96-bit card,
M = 7 and T = 5 give 35 parity bits and 61 data bits (TrustMark's choice for its 100 bits).

Deciding without a known message: a reading that decodes after correcting e flips is a false positive only when
random bits fall within distance e of some codeword. There are 2^data_bits codewords, each with V(n, e) =
sum_{i<=e} C(n, i) words within e, so that chance is at most 2^-ecc_bits * V(n, e) (`pvalue`): exact for a
perfect code, an upper bound otherwise. A clean reading of a 96-bit card (e = 0) gives 2.9e-11; e = 2 gives 1.4e-7.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import bchlib
import numpy as np

from videoseal_tflite.errors import InvalidMessage


@dataclasses.dataclass(frozen=True)
class Decoded:
    data: np.ndarray | None  # [data_bits] bool, None when the code's check failed (more flips than it corrects)
    corrected: int | None  # bits the code flipped back
    pvalue: float  # chance that random bits decode with this many corrections (1.0 when the check failed)

    @property
    def ok(self) -> bool:
        return self.data is not None

    def pvalue_among(self, hypotheses: int) -> float:
        """The p-value when this reading was chosen among `hypotheses` (Bonferroni, as `verdict.decide`)."""
        return min(1.0, self.pvalue * hypotheses)


@dataclasses.dataclass(frozen=True)
class PayloadCode:
    nbits: int  # the card's raw bits
    m: int  # GF(2^m): codewords of at most 2^m - 1 bits
    t: int  # flipped bits it corrects

    def __post_init__(self) -> None:
        if self.data_bits < 1 or self.nbits > 2**self.m - 1:
            raise ValueError(f"BCH(m={self.m}, t={self.t}) does not fit {self.nbits} bits")

    @functools.cached_property
    def _bch(self) -> bchlib.BCH:  # built once per code: every size below and each encode/decode asks for it
        return bchlib.BCH(self.t, m=self.m)

    @property
    def ecc_bits(self) -> int:
        return self._bch.ecc_bits

    @property
    def data_bits(self) -> int:
        return self.nbits - self.ecc_bits

    @property
    def _data_bytes(self) -> int:
        return -(-self.data_bits // 8)

    @classmethod
    def from_meta(cls, meta: dict) -> PayloadCode | None:
        """The code a .tflite's metadata declares (`payload_code`), or None for a card without one."""
        code = meta.get("payload_code")
        return cls(int(meta["nbits"]), int(code["m"]), int(code["t"])) if code else None

    def to_json(self) -> dict:
        return {"type": "bch", "m": self.m, "t": self.t, "data_bits": self.data_bits, "ecc_bits": self.ecc_bits}

    def encode(self, data: np.ndarray) -> np.ndarray:
        """[data_bits] 0/1 -> [nbits] float32 0/1: the data, then the parity bits."""
        data = np.asarray(data).astype(bool).reshape(-1)
        if data.size != self.data_bits:
            raise InvalidMessage(f"payload has {data.size} bits but the card carries {self.data_bits}")
        ecc = self._bch.encode(self._pack(data))
        parity = np.unpackbits(np.frombuffer(bytes(ecc), np.uint8))[: self.ecc_bits].astype(bool)
        return np.concatenate([data, parity]).astype(np.float32)

    def decode(self, bits: np.ndarray) -> Decoded:
        """[nbits] read bits -> the data, corrected where the code can, and the chance of that by luck."""
        bits = np.asarray(bits).astype(bool).reshape(-1)
        if bits.size != self.nbits:
            raise InvalidMessage(f"{bits.size} bits read but the code spans {self.nbits}")
        data, parity = bits[: self.data_bits], bits[self.data_bits :]
        ecc_bytes = self._bch.ecc_bytes
        ecc = np.packbits(np.concatenate([parity, np.zeros(8 * ecc_bytes - self.ecc_bits, bool)])).tobytes()
        packed = bytearray(self._pack(data))
        bch = self._bch
        flips = bch.decode(packed, bytearray(ecc))
        if flips < 0:
            return Decoded(None, None, 1.0)
        fixed_ecc = bytearray(ecc)
        bch.correct(packed, fixed_ecc)
        unpacked = np.unpackbits(np.frombuffer(bytes(packed), np.uint8))
        pad = 8 * self._data_bytes - self.data_bits
        ecc_pad = np.unpackbits(np.frombuffer(bytes(fixed_ecc), np.uint8))[self.ecc_bits :]
        if unpacked[:pad].any() or ecc_pad.any():  # a "correction" of a bit never sent: not a codeword of ours
            return Decoded(None, None, 1.0)
        data = unpacked[pad:].astype(bool)
        # bchlib can report success for a word whose nearest codeword (of the unshortened code) lies outside the
        # bits we send; measured: 156 of 20,000 random 96-bit words, where the bound allows 38. Re-encoding and
        # counting the distance keeps exactly the words within t of one of our codewords.
        distance = int((self.encode(data).astype(bool) != bits).sum())
        if distance > self.t:
            return Decoded(None, None, 1.0)
        return Decoded(data, distance, self.pvalue(distance))

    def pvalue(self, corrected: int) -> float:
        """At most 2^-ecc_bits * V(nbits, corrected): random bits decoding with that many corrections or fewer."""
        volume = sum(math.comb(self.nbits, i) for i in range(corrected + 1))
        return min(1.0, volume / 2**self.ecc_bits)

    def _pack(self, data: np.ndarray) -> bytes:
        pad = np.zeros(8 * self._data_bytes - self.data_bits, bool)  # the shortened code's zeros, never sent
        return np.packbits(np.concatenate([pad, data])).tobytes()


def payload_bits(text: str, data_bits: int) -> np.ndarray:
    """`--payload`: '0x' + hex digits, or text (UTF-8) -> [data_bits] bool, right-aligned, zero-padded on the left."""
    if text.lower().startswith("0x"):
        try:
            value = int(text[2:], 16)
        except ValueError:
            raise InvalidMessage(f"payload {text!r} is not hexadecimal after 0x") from None
        if value.bit_length() > data_bits:
            raise InvalidMessage(f"payload {text} needs {value.bit_length()} bits; the card carries {data_bits}")
        return np.array([(value >> i) & 1 for i in range(data_bits - 1, -1, -1)], bool)
    raw = text.encode("utf-8")
    if 8 * len(raw) > data_bits:
        raise InvalidMessage(
            f"payload {text!r} is {len(raw)} bytes of UTF-8; the card carries {data_bits} bits ({data_bits // 8} bytes)"
        )
    bits = np.unpackbits(np.frombuffer(raw, np.uint8)).astype(bool) if raw else np.zeros(0, bool)
    return np.concatenate([np.zeros(data_bits - bits.size, bool), bits])


def payload_text(data: np.ndarray) -> dict:
    """Decoded data bits -> {'hex': '0x...', 'text': str or None (when the bytes are not printable UTF-8)}."""
    data = np.asarray(data).astype(bool)
    value = int("".join("1" if b else "0" for b in data), 2) if data.size else 0
    raw = value.to_bytes(-(-data.size // 8), "big").lstrip(b"\0")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"hex": hex(value), "text": text if text is not None and text.isprintable() else None}
