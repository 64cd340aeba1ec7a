import numpy as np
import pytest
from PIL import Image

from reel.data.contact_sheet import write_contact_sheet


def test_rows_of_frames_with_captions(tmp_path):
    clips = [np.full((17, 32, 48, 3), 40 * i, np.uint8) for i in range(3)]
    clips[1][:, :, :, 0] = 230  # a red clip
    path = write_contact_sheet(tmp_path / "sheet.png", clips, ["a", "b", "c"], max_frames=5)
    sheet = np.asarray(Image.open(path))
    # three rows of five frames, each frame upscaled so its short side reaches 96 px
    assert sheet.shape[1] == 4 + 5 * (144 + 4)
    assert sheet.shape[0] == 4 + 3 * (96 + 16 + 4)
    red_row_top = 4 + (96 + 16 + 4)
    assert tuple(sheet[red_row_top + 10, 10]) == (230, 40, 40)
    caption_band = sheet[4 + 96 : 4 + 96 + 16]
    assert (caption_band < 128).any()  # caption text drawn in black under the first row


def test_mismatched_captions_rejected(tmp_path):
    with pytest.raises(ValueError):
        write_contact_sheet(tmp_path / "x.png", [np.zeros((1, 8, 8, 3), np.uint8)], [])
