"""Feature vectors as inputs: a column of a data set, and the file `nlptk predict --features` reads."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nlptoolkit import NlptkError, feature_matrix, read_feature_file


def where(i):
    return f"data.jsonl, row {i + 1}"


def test_a_numeric_column_is_stacked_exactly():
    rows = [[0.0, 0.5, 1.0], [0.25, 0.75, 0.125]]
    out = feature_matrix(rows, 3, where)
    assert out.dtype == torch.float32 and out.tolist() == rows
    as_arrays = np.empty(2, dtype=object)  # how datasets' numpy format gives a ragged-capable column
    as_arrays[0], as_arrays[1] = np.array(rows[0]), np.array(rows[1])
    assert feature_matrix(as_arrays, 3, where).tolist() == rows
    assert feature_matrix(np.array(rows), None, where).shape == (2, 3)  # size taken from the data


def test_a_csv_cell_holding_a_json_list_is_read():
    assert feature_matrix(["[1, 2]", "[3.5, 4]"], 2, where).tolist() == [[1.0, 2.0], [3.5, 4.0]]


@pytest.mark.parametrize("rows, expected", [
    ([[0.1, 0.2], [0.3]], "data.jsonl, row 2: field 'f' has 1 numbers, but the model reads vectors of 2"),
    ([[0.1, 0.2], [0.3, "x"]], "data.jsonl, row 2: field 'f' holds 'x' at position 1; every entry must be a number"),
    ([[0.1, 0.2], None], "data.jsonl, row 2: field 'f' is missing (null), not a list of numbers"),
    ([[0.1, None], [0.1, 0.2]], "data.jsonl, row 1: field 'f' holds null at position 1"),
    ([[True, False]], "data.jsonl, row 1: field 'f' holds True at position 0"),
    ([[0.1, float("nan")]], "data.jsonl, row 1: field 'f' holds nan at position 1; every entry must be a finite number"),
    ([[0.1, 0.2], "a cat"], "data.jsonl, row 2: field 'f' is the text 'a cat', not a list of numbers"),
    ([[0.1, 0.2], 7], "data.jsonl, row 2: field 'f' is int 7, not a list of numbers"),
    ([["0.1", "0.2"]], "data.jsonl, row 1: field 'f' holds '0.1' at position 0"),  # numbers as text are not numbers
])
def test_bad_rows_name_the_row_and_the_problem(rows, expected):
    with pytest.raises(NlptkError) as err:
        feature_matrix(rows, 2, where, "field 'f'")
    assert str(err.value).startswith(expected), str(err.value)


def test_the_first_row_sets_the_size_when_none_is_given():
    with pytest.raises(NlptkError, match=r"row 3: .* has 3 numbers, but the model reads vectors of 2"):
        feature_matrix([[1, 2], [3, 4], [5, 6, 7]], None, where)


def test_read_feature_file_forms(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps([0.5, 1, 2]))
    assert read_feature_file(str(one), 3).tolist() == [[0.5, 1.0, 2.0]]
    several = tmp_path / "several.json"
    several.write_text(json.dumps([[1, 2, 3], [4, 5, 6]]))
    assert read_feature_file(str(several), 3).tolist() == [[1, 2, 3], [4, 5, 6]]
    lines = tmp_path / "v.jsonl"
    lines.write_text("[1, 2, 3]\n\n[4, 5, 6]\n")
    assert read_feature_file(str(lines), 3).tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize("text, expected", [
    ("[1, 2]", "--features {p}: the feature vector has 2 numbers, but the model reads vectors of 3; give vectors of 3"),
    ("[1, 2, 3]\n\n[1, 2]\n", "--features {p}, line 3: the feature vector has 2 numbers, but the model reads vectors of 3"),
    ("[1, 2, 3]\n[1, 2, 3\n", "--features {p}, line 2: not valid JSON"),
    ("[[1, 2, 3], [1, 2, \"a\"]]", "--features {p}, vector 2: the feature vector holds 'a' at position 2"),
    ("\n", "--features {p}: the file is empty"),
])
def test_read_feature_file_errors_name_file_line_and_sizes(tmp_path, text, expected):
    path = tmp_path / "f.jsonl"
    path.write_text(text)
    with pytest.raises(NlptkError) as err:
        read_feature_file(str(path), 3)
    assert str(err.value).startswith(expected.format(p=path)), str(err.value)
    assert "\n" not in str(err.value)


def test_read_feature_file_missing(tmp_path):
    with pytest.raises(NlptkError, match="no such file"):
        read_feature_file(str(tmp_path / "nope.json"), 3)
