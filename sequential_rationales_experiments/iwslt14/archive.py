"""Getting the IWSLT14 de-en archive and reading the files prepare-iwslt14.sh uses from it.

The archive is read in memory, never extracted: a hostile member path cannot write anywhere,
and an already extracted ``de-en/`` folder works the same way (for machines that are offline).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from .lines import IWSLTFormatError, decode_lines

# fairseq's current prepare-iwslt14.sh downloads from its own mirror; the original script (and
# the 2021 checkout the paper used) pointed at WIT3, which is tried second.
IWSLT14_URLS: tuple[str, ...] = (
    "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz",
    "https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz",
)
ARCHIVE_NAME = "de-en.tgz"
SRC, TGT, PAIR = "de", "en", "de-en"

# Order of the script's `cat` into test.$l.
IWSLT14_TEST_SETS: tuple[str, ...] = (
    "IWSLT14.TED.dev2010",
    "IWSLT14.TEDX.dev2012",
    "IWSLT14.TED.tst2010",
    "IWSLT14.TED.tst2011",
    "IWSLT14.TED.tst2012",
)

Log = Callable[[str], None]


class DownloadError(RuntimeError):
    """The IWSLT14 archive could not be downloaded from any mirror."""


def download_iwslt14(
    dest_dir: str | os.PathLike,
    urls: Sequence[str] = IWSLT14_URLS,
    timeout: float = 60.0,
    log: Log = print,
) -> Path:
    """Return ``dest_dir/de-en.tgz``, downloading it from the first mirror that works.

    An existing file is reused. A download that is not a gzip'd tar (e.g. an HTML error
    page) counts as a failure. Raises :class:`DownloadError` listing every URL tried and
    how to pass an already downloaded archive with ``--archive`` instead.
    """
    dest = Path(dest_dir) / ARCHIVE_NAME
    if dest.is_file():
        log(f"Using the already downloaded archive {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        log(f"Downloading IWSLT14 de-en from {url} ...")
        partial = dest.with_name(dest.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(
                partial, "wb"
            ) as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"  {url}: {exc}")
            partial.unlink(missing_ok=True)
            continue
        if not tarfile.is_tarfile(partial):
            failures.append(f"  {url}: the downloaded file is not a tar archive")
            partial.unlink(missing_ok=True)
            continue
        partial.replace(dest)
        log(f"Data successfully downloaded to {dest} (md5 {_md5(dest)}).")
        return dest
    raise DownloadError(
        "Could not download the IWSLT14 de-en archive:\n"
        + "\n".join(failures)
        + f"\nIf this machine is offline, download {urls[0]} on a machine with internet "
        f"access and pass the file with --archive PATH/{ARCHIVE_NAME} (an extracted de-en/ "
        "folder works too)."
    )


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _required_iwslt_files() -> list[str]:
    names = [f"train.tags.{PAIR}.{lang}" for lang in (SRC, TGT)]
    names += [f"{name}.{PAIR}.{lang}.xml" for name in IWSLT14_TEST_SETS for lang in (SRC, TGT)]
    return names


def read_iwslt14_archive(archive: str | os.PathLike) -> dict[str, list[str]]:
    """Read the files prepare-iwslt14.sh uses from ``de-en.tgz`` or an extracted folder.

    Files are found by base name anywhere in the archive/folder (the official archive has
    them under ``de-en/``): ``train.tags.de-en.{de,en}`` and the ten
    ``IWSLT14.TED*.de-en.{de,en}.xml`` files of :data:`IWSLT14_TEST_SETS`. Returns
    ``{base name: lines}``; raises :class:`IWSLTFormatError` naming any missing file.
    Nothing is extracted to disk, so a hostile member path cannot write anywhere.
    """
    archive = Path(archive)
    wanted = _required_iwslt_files()
    found: dict[str, list[str]] = {}
    if archive.is_dir():
        for path in sorted(archive.rglob("*")):
            if path.is_file() and path.name in wanted and path.name not in found:
                found[path.name] = decode_lines(path.read_bytes(), str(path))
        available = "files under " + str(archive)
    elif archive.is_file():
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = [m for m in tar.getmembers() if m.isfile()]
                for member in members:
                    base = member.name.rsplit("/", 1)[-1]
                    if base in wanted and base not in found:
                        data = tar.extractfile(member).read()
                        found[base] = decode_lines(data, f"{archive}:{member.name}")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise IWSLTFormatError(f"{archive} is not a readable .tgz archive ({exc})") from exc
        available = f"members of {archive}"
    else:
        raise FileNotFoundError(f"IWSLT14 archive {archive} does not exist")
    missing = [name for name in wanted if name not in found]
    if missing:
        raise IWSLTFormatError(
            f"{archive} is not the IWSLT14 de-en archive: missing {', '.join(missing)} among "
            f"the {available}"
        )
    return found
