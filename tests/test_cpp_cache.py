"""The C++ kernels' build folder is keyed by their sources and flags (nn/cpp/__init__.py)."""

from __future__ import annotations

import shutil

from r2dn_control.nn import cpp


def test_library_name_depends_on_the_sources_location_and_flags(tmp_path) -> None:
    copies = []
    for path in cpp.SOURCES + cpp.HEADERS:
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        copies.append(copy)
    files = tuple(copies)
    same = cpp._source_tag(files)
    assert same == cpp._source_tag(files)
    # An identical copy elsewhere (another checkout) gets its own folder: torch writes the
    # absolute source paths into build.ninja, so a shared folder would rebuild in turn.
    assert same != cpp._source_tag()
    assert cpp._library_name().endswith("_" + cpp._source_tag())
    copies[0].write_text(copies[0].read_text() + "\n// edited\n")
    assert cpp._source_tag(files) != same
    shutil.copy(cpp.SOURCES[0], copies[0])
    assert cpp._source_tag(files) == same
    copies[-1].write_text(copies[-1].read_text() + " ")  # a header counts too
    assert cpp._source_tag(files) != same
    assert cpp._source_tag(flags=("-O2",)) != cpp._source_tag()
