"""The one check every command makes before writing an output: nothing existing is replaced by accident."""

import pytest

from highmodal.errors import HighmodalError
from highmodal.fileio import refuse_to_replace


def test_an_existing_output_needs_overwrite(tmp_path):
    refuse_to_replace(tmp_path / "new", overwrite=False)  # nothing there: fine
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.json").write_text("{}")
    with pytest.raises(HighmodalError, match=r"run: already exists; pass --overwrite to replace it$"):
        refuse_to_replace(tmp_path / "run", overwrite=False)
    with pytest.raises(HighmodalError, match=r"pass --reuse to continue it or --overwrite to replace it$"):
        refuse_to_replace(tmp_path / "run", overwrite=False, resumable=True)
    refuse_to_replace(tmp_path / "run", overwrite=True)
    assert (tmp_path / "run" / "model.json").read_text() == "{}"  # the check itself never deletes
