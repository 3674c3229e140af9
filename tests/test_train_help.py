"""`python -m unpaired.train --help` documents every option."""

import dataclasses

from unpaired.config import TrainConfig, build_parser


def test_help_lists_every_option_and_shows_descriptions_with_defaults():
    text = build_parser().format_help()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in text
    assert "training crop side, taken at the image's own scale" in text
    assert "(default: 64)" in text  # crop's default, appended to its description
