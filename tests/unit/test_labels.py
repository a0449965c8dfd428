"""The six classes: one table, in the model's output order, and the lookups over it."""

from __future__ import annotations

import pytest

from cassava import contract, labels


def test_indices_follow_the_table_order() -> None:
    assert [label.index for label in labels.LABELS] == list(range(labels.NUM_CLASSES))


def test_model_output_order() -> None:
    # The CropNet model card's order; the dataset's five classes first, then `unknown`.
    assert labels.CODES == ("cbb", "cbsd", "cgm", "cmd", "healthy", "unknown")
    assert labels.CODES[:-1] == labels.DATASET_CODES
    assert labels.NUM_CLASSES == 6


def test_codes_and_names_are_unique_and_non_empty() -> None:
    assert len(set(labels.CODES)) == labels.NUM_CLASSES
    assert len(set(labels.NAMES)) == labels.NUM_CLASSES
    assert all(code and code == code.lower() for code in labels.CODES)
    assert all(name.strip() == name and name for name in labels.NAMES)


@pytest.mark.parametrize("label", labels.LABELS, ids=lambda label: label.code)
def test_lookups_round_trip(label: labels.Label) -> None:
    assert labels.by_index(label.index) is label
    assert labels.by_code(label.code) is label


@pytest.mark.parametrize("index", [-1, labels.NUM_CLASSES, 100])
def test_by_index_out_of_range_names_the_index_and_the_range(index: int) -> None:
    with pytest.raises(IndexError, match=rf"class index {index} is out of range 0\.\.5"):
        labels.by_index(index)


def test_by_code_unknown_lists_the_known_codes() -> None:
    with pytest.raises(KeyError, match=r"'mosaic'.*cbb, cbsd, cgm, cmd, healthy, unknown"):
        labels.by_code("mosaic")


def test_contract_probabilities_width_is_the_number_of_classes() -> None:
    specs = {name: shape for name, _, shape in contract.OUTPUT_SPECS}
    assert specs[contract.OUTPUT_PROBABILITIES] == (-1, labels.NUM_CLASSES)
