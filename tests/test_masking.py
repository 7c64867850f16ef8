import pytest

from sop_engine.masking import MASK, Masker


def test_mask_is_three_stars():
    assert MASK == "***"


def test_masks_every_occurrence_in_text():
    mask = Masker(["hunter2"])
    assert mask("typed hunter2, then hunter2 again") == "typed ***, then *** again"


def test_text_without_a_secret_comes_back_unchanged():
    assert Masker(["hunter2"])("nothing to hide") == "nothing to hide"


def test_a_secret_that_contains_another_is_masked_whole():
    # were the short one replaced first, "pass" in "password1" would leave "***word1" in clear
    mask = Masker(["pass", "password1"])
    assert mask("password1 and pass") == "*** and ***"


def test_masks_inside_nested_lists_dicts_and_keys():
    mask = Masker(["s3cret"])
    value = {"user": "ann", "s3cret": ["a s3cret", {"deep": "s3cret!"}], "n": 1, "ok": True, "no": None}
    assert mask(value) == {"user": "ann", "***": ["a ***", {"deep": "***!"}], "n": 1, "ok": True, "no": None}


def test_tuples_come_back_as_masked_lists():
    assert Masker(["k"])(("k", "x")) == ["***", "x"]


def test_a_number_equal_to_a_secret_is_masked():
    mask = Masker([1234])
    assert mask(1234) == MASK
    assert mask(12345) == 12345
    assert mask("pin 1234") == "pin ***"


def test_a_float_secret_matches_its_text():
    assert Masker(["2.5"])(2.5) == MASK


def test_booleans_are_never_masked():
    assert Masker(["True", "1"])(True) is True


@pytest.mark.parametrize("secrets", [None, [], [None], [""], [None, ""]])
def test_empty_and_missing_secrets_mask_nothing(secrets):
    mask = Masker(secrets)
    assert not mask
    # an empty secret would otherwise match between every character
    assert mask("plain text") == "plain text"
    value = {"a": ["b"]}
    assert mask(value) is value


def test_a_masker_with_secrets_is_true():
    assert Masker(["x"])
    assert Masker([None, "x"])


def test_values_of_other_types_pass_through():
    marker = object()
    assert Masker(["x"])(marker) is marker
    assert Masker(["x"])(None) is None


def test_text_method_masks_plain_strings():
    assert Masker(["ab", "abc"]).text("abcab") == "******"


def test_secrets_are_masked_in_the_forms_urls_and_json_give_them():
    from sop_engine.masking import Masker

    mask = Masker(["p@ss word/1"])
    text = 'go?q=p%40ss%20word%2F1&r=p%40ss+word%2F1 {"s": "p@ss word/1"}'
    assert mask(text) == 'go?q=***&r=*** {"s": "***"}'


def test_every_value_inside_a_secret_list_or_dict_is_secret():
    from sop_engine.masking import Masker

    mask = Masker([["tok-a", "tok-b"], {"key": "k-123"}])
    assert mask({"a": "tok-a", "b": ["tok-b"], "c": "k-123!"}) == {"a": "***", "b": ["***"], "c": "***!"}
