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
    assert len(set([label.name for label in labels.LABELS])) == labels.NUM_CLASSES
    assert all(code and code == code.lower() for code in labels.CODES)
    assert all(name.strip() == name and name for name in [label.name for label in labels.LABELS])


def test_every_class_has_a_one_sentence_description() -> None:
    descriptions = [label.description for label in labels.LABELS]
    assert len(set(descriptions)) == labels.NUM_CLASSES
    for description in descriptions:
        # One line on a phone: a single sentence, no line breaks.
        assert description.strip() == description
        assert "\n" not in description
        assert description.endswith(".")
        assert description.count(". ") == 0


@pytest.mark.parametrize("label", labels.LABELS, ids=lambda label: label.code)
def test_lookups_round_trip(label: labels.Label) -> None:
    assert labels.by_index(label.index) is label


@pytest.mark.parametrize("index", [-1, labels.NUM_CLASSES, 100])
def test_by_index_out_of_range_names_the_index_and_the_range(index: int) -> None:
    with pytest.raises(IndexError, match=rf"class index {index} is out of range 0\.\.5"):
        labels.by_index(index)


def test_contract_probabilities_width_is_the_number_of_classes() -> None:
    specs = {name: shape for name, _, shape in contract.OUTPUT_SPECS}
    assert specs[contract.OUTPUT_PROBABILITIES] == (-1, labels.NUM_CLASSES)
