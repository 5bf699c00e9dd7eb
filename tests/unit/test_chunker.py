from voice_agent.pipeline.chunker import SentenceChunker, speakable


def feed(chunker: SentenceChunker, text: str, step: int = 3) -> list[str]:
    out: list[str] = []
    for i in range(0, len(text), step):
        out += chunker.push(text[i:i + step])
    return out


def test_sentences_come_out_as_soon_as_they_end():
    c = SentenceChunker()
    out = feed(c, "The capital of France is Paris. It is on the Seine. ")
    assert out == ["The capital of France is Paris.", "It is on the Seine."]
    assert c.flush() is None


def test_first_clause_is_released_early_but_later_ones_wait_for_the_sentence():
    c = SentenceChunker(first_clause_min_words=4, clause_min_words=14)
    out = feed(c, "Well, the answer to your question, I think, is simple, and short. Then, more follows")
    # "Well," is too short; the first piece with four words may end at a comma.
    assert out[0] == "Well, the answer to your question,"
    assert out[1] == "I think, is simple, and short."
    assert c.flush() == "Then, more follows"


def test_abbreviations_and_decimals_do_not_cut():
    c = SentenceChunker()
    out = feed(c, "Dr. Smith measured 3.5 litres today. Done. ")
    assert out == ["Dr. Smith measured 3.5 litres today.", "Done."]


def test_markdown_and_emoji_are_not_spoken():
    assert speakable("**Paris** is the `capital` 🎉 of # France") == "Paris is the capital of France"
    c = SentenceChunker()
    assert feed(c, "- **Bold** claim. ") == ["- Bold claim."]


def test_flush_returns_the_unfinished_tail_once():
    c = SentenceChunker()
    assert c.push("No final punctuation") == []
    assert c.flush() == "No final punctuation"
    assert c.flush() is None


def test_a_sentence_is_released_with_its_last_token_not_one_token_later():
    c = SentenceChunker()
    assert c.push("A spider has eight legs") == []
    assert c.push(".") == ["A spider has eight legs."]
    assert c.push(" Yes!") == ["Yes!"]


def test_a_number_ending_in_a_dot_waits_for_the_next_token():
    c = SentenceChunker()
    assert c.push("Pi is about 3.") == []
    assert c.push("14 and e is 2.") == []
    assert c.push("72. ") == ["Pi is about 3.14 and e is 2.72."]


def test_first_piece_is_cut_after_a_few_words_when_no_punctuation_comes():
    c = SentenceChunker(first_piece_max_words=4)
    # Token by token, as the LLM streams: nothing until the 4th word is known to be complete.
    got = [c.push(t) for t in ["The", " capital", " of", " France"]]
    assert got == [[], [], [], []]  # "France" may still go on ("Frances")
    assert c.push(" is") == ["The capital of France"]
    assert feed(c, " Paris, a city on the Seine with many bridges. Next") == [
        "is Paris, a city on the Seine with many bridges."]  # later pieces: sentences only
    assert c.flush() == "Next"


def test_an_early_sentence_end_or_clause_wins_over_the_word_count():
    c = SentenceChunker(first_piece_max_words=4)
    assert feed(c, "Yes. The capital of France is Paris. ") == [
        "Yes.", "The capital of France is Paris."]
    c = SentenceChunker(first_piece_max_words=6)
    assert feed(c, "Well, in short, the capital is Paris. ") == [
        "Well, in short,", "the capital is Paris."]
    c = SentenceChunker()  # 0: no cut by word count
    assert feed(c, "The capital of France is Paris. ") == ["The capital of France is Paris."]


def test_cut_words_gives_the_complete_words_so_far_and_keeps_the_rest_in_order():
    c = SentenceChunker()
    assert feed(c, "Leaves change colour because the chlor") == []
    assert c.cut_words(8) is None  # only 5 complete words: the buffer is left as it is
    # "chlor" may go on; "because the" lean on what follows: they wait for the next piece.
    assert c.cut_words(3) == "Leaves change colour"
    assert c.cut_words(3) is None  # "because the": fewer than 3 complete words
    assert feed(c, "ophyll in them breaks down. And") == [
        "because the chlorophyll in them breaks down."]
    assert c.flush() == "And"
    c = SentenceChunker()
    assert feed(c, "of the") == [] and c.cut_words(1) == "of"  # one word is all there is


def test_a_cut_by_word_count_does_not_end_on_a_word_that_leans_on_the_next():
    def first_piece(text: str, words: int) -> str:
        c = SentenceChunker(first_piece_max_words=words)
        return feed(c, text)[0]

    assert first_piece("The capital of France is Paris", 3) == "The capital of France"
    assert first_piece("Mercury is the closest planet", 3) == "Mercury is the closest"
    assert first_piece("Spiders have eight legs", 3) == "Spiders have eight"
    # At most two words more: "Well it is in a" would still lean, and is cut there anyway.
    assert first_piece("Well it is in a big house", 3) == "Well it is in a"
