"""Test images (camera JPEGs with private metadata, noise, PNG bombs), upload request
streams and a file lister, shared by the image unit tests and the system tests."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import ExifTags, Image, ImageCms

from mysocial.v1 import command_service_pb2 as cmd

MAX_PIXELS = 40_000_000


SERIAL = "SN-SECRET-0042"


RED = (255, 0, 0)


def exif_with_gps(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TestCam"
    exif[ExifTags.Base.Model] = "Model X"
    exif[ExifTags.Base.BodySerialNumber] = SERIAL
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (2.0, 21.0, 3.0),
    }
    return exif


def camera_jpeg(
    width: int = 1600, height: int = 1000, orientation: int = 6, tint: int = 128
) -> bytes:
    """A JPEG as a phone writes it: pixels stored sideways (EXIF orientation 6), GPS
    position, camera serial, XMP, an ICC profile and a comment. A red block marks the
    stored top-left corner so the test can tell where it ends up."""
    im = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize((width, height)),
            Image.linear_gradient("L").rotate(90).resize((width, height)),
            Image.new("L", (width, height), tint),
        ),
    )
    im.paste(RED, (0, 0, width // 8, height // 8))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    im.save(
        buf,
        "JPEG",
        quality=90,
        exif=exif_with_gps(orientation),
        comment=b"taken at home",
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">home address</x:xmpmeta>',
        icc_profile=icc,
    )
    return buf.getvalue()


def noise_jpeg(width: int, height: int, seed: int = 1) -> bytes:
    """A JPEG that compresses badly (random pixels), for uploads of a given heft."""
    rng = random.Random(seed)
    im = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny, well-formed PNG whose header declares a gigantic canvas."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + png_chunk(b"IEND", b"")
    )


def encode(im: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def assert_no_private_metadata(data: bytes) -> None:
    im = decode(data)
    exif = im.getexif()
    assert len(exif) == 0, dict(exif)
    assert exif.get_ifd(ExifTags.IFD.GPSInfo) == {}
    for key in ("exif", "icc_profile", "xmp", "comment", "XML:com.adobe.xmp"):
        assert key not in im.info, key
    for secret in (SERIAL.encode(), b"Exif\x00", b"home address", b"taken at home", b"TestCam"):
        assert secret not in data, secret


def is_red(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return r > 200 and g < 60 and b < 60


def requests(
    data: bytes, chunk: int = 64 * 1024, declared: int | None = None
) -> list[cmd.UploadImageRequest]:
    size = len(data) if declared is None else declared
    out = [
        cmd.UploadImageRequest(metadata=cmd.ImageUploadMetadata(file_name="a.jpg", size_bytes=size))
    ]
    out += [cmd.UploadImageRequest(chunk=data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return out


def files_under(root: Path) -> list[str]:
    """Every file below root (temporary ones included), relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
