"""Tests of the kiln Python binding against the tiny-qwen2 fixture and HF transformers' outputs."""

from __future__ import annotations

import gc
import threading
import unittest

import kiln
from kiln_testing import (TINY_QWEN2, hf_chat_render, malloc_in_use, qwen3_chat_template, rel_l2,
                          tiny_logits, tiny_reference)

REF = tiny_reference()


def cpu_runtime(**kwargs) -> kiln.Runtime:
    # One thread: the CI machine has two cores shared with the rest of the test suite.
    return kiln.Runtime(kiln.Backend.CPU, n_threads=1, **kwargs)


class ModuleTest(unittest.TestCase):
    def test_abi_version_matches_header(self):
        self.assertEqual(kiln.raw.kiln_abi_version(), kiln.ABI_VERSION)
        self.assertIn("0.1.0", kiln.version())


class QuantizeTest(unittest.TestCase):
    def test_quantized_gguf_reloads_close_to_transformers(self):
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as tmp, cpu_runtime() as rt:
            dst = os.path.join(tmp, "tiny.gguf")
            stages = []
            rt.quantize(TINY_QWEN2, dst, kiln.QuantizeType.Q8_0, progress=lambda f, s: stages.append(s))
            self.assertIn("writing", stages)
            with rt.load_model(dst) as model, model.session() as s:
                logits = s.forward(REF["token_ids"], kiln.LogitsMode.ALL)
                flat = memoryview(logits).cast("B").cast("f") if isinstance(logits, memoryview) else logits.ravel()
                # llama.cpp's own Q8_0 file of this model is 0.016 from transformers (rel L2).
                self.assertLess(rel_l2(flat, tiny_logits()), 0.024)
            with self.assertRaises(kiln.NotFoundError):
                rt.quantize(os.path.join(tmp, "missing"), dst)
            with self.assertRaises(kiln.InvalidArgumentError):
                rt.quantize(TINY_QWEN2, dst, 99)


class ModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.runtime = cpu_runtime()
        cls.model = cls.runtime.load_model(TINY_QWEN2)

    @classmethod
    def tearDownClass(cls):
        cls.runtime.close()

    def test_info_describes_the_fixture(self):
        info = self.model.info
        self.assertEqual(info.architecture, "Qwen2ForCausalLM")
        self.assertEqual(info.vocab_size, REF["vocab_size"])
        self.assertEqual(self.runtime.info.backend, kiln.Backend.CPU)
        self.assertIn(info.eos_token_id, self.model.eos_ids)

    def test_tokenize_matches_transformers_and_round_trips(self):
        ids = self.model.tokenize(REF["prompt_text"])
        self.assertEqual(ids[: len(REF["token_ids"])], REF["token_ids"])
        self.assertEqual(self.model.detokenize(ids), REF["prompt_text"])
        self.assertEqual(self.model.detokenize(REF["token_ids"]), REF["prompt_decoded"])
        pieces = b"".join(self.model.token_to_piece(i) for i in REF["token_ids"])
        self.assertEqual(pieces.decode(), REF["prompt_decoded"])

    def test_chat_render_matches_transformers(self):
        messages = [{"role": "system", "content": "You are a terse assistant."},
                    {"role": "user", "content": "What is 2+2?"}]
        text = self.model.chat_render(messages, add_generation_prompt=True,
                                      template=qwen3_chat_template())
        self.assertEqual(text, hf_chat_render("qwen3", "system_user_gen"))

    def test_chat_render_tokens_masks_the_assistant_reply(self):
        messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
        ids, mask = self.model.chat_render_tokens(messages, add_generation_prompt=False,
                                                  template=qwen3_chat_template())
        self.assertEqual(len(ids), len(mask))
        self.assertIn(1, mask)
        # Qwen3's template writes an empty think block before the last reply; the mask covers what
        # the template writes for the reply, up to and including its end-of-turn token.
        self.assertEqual(self.model.detokenize([i for i, m in zip(ids, mask) if m]),
                         "<think>\n\n</think>\n\nHello there<|im_end|>")

    def test_forward_logits_match_transformers(self):
        with self.model.session() as s:
            logits = s.forward(REF["token_ids"], kiln.LogitsMode.ALL)
            self.assertEqual(tuple(logits.shape), (len(REF["token_ids"]), REF["vocab_size"]))
            flat = memoryview(logits).cast("B").cast("f") if isinstance(logits, memoryview) else logits.ravel()
            self.assertLess(rel_l2(flat, tiny_logits()), 1e-4)

    def test_sample_greedy_is_argmax_of_forward(self):
        with self.model.session() as s:
            last = s.forward(REF["token_ids"])
            values = list(last)
            self.assertEqual(s.sample(last, temperature=0), values.index(max(values)))
            self.assertEqual(s.sample(last, temperature=0), REF["greedy_continuation_ids"][0])
            self.assertEqual(s.position[0], len(REF["token_ids"]))

    def test_greedy_generation_equals_transformers(self):
        n = len(REF["greedy_continuation_ids"])
        with self.model.session() as s:
            result = s.complete(REF["token_ids"], max_tokens=n, temperature=0, ignore_eos=True)
        self.assertEqual(result.ids, REF["greedy_continuation_ids"])
        self.assertEqual(result.stop_reason, kiln.StopReason.MAX_TOKENS)
        self.assertEqual(result.text, REF["greedy_continuation_text"])

    def test_streamed_pieces_concatenate_to_the_detokenized_text(self):
        n = len(REF["greedy_continuation_ids"])
        with self.model.session() as s:
            gen = s.generate(REF["token_ids"], max_tokens=n, temperature=0, ignore_eos=True)
            pieces = list(gen)
            result = s.last_result
        self.assertGreater(len(pieces), 1)
        self.assertEqual("".join(pieces), self.model.detokenize(result.ids))
        self.assertEqual(result.ids, REF["greedy_continuation_ids"])

    def test_leaving_the_stream_early_stops_generation_and_keeps_the_session(self):
        with self.model.session() as s:
            got = []
            for piece in s.generate(REF["token_ids"], max_tokens=200, temperature=0, ignore_eos=True):
                got.append(piece)
                if len(got) == 3:
                    break
            self.assertEqual(s.last_result.stop_reason, kiln.StopReason.CALLBACK)
            self.assertLess(s.last_result.n_generated, 200)
            self.assertEqual(s.last_result.ids[:3], REF["greedy_continuation_ids"][:3])
            s.reset()
            again = s.complete(REF["token_ids"], max_tokens=4, temperature=0, ignore_eos=True)
            self.assertEqual(again.ids, REF["greedy_continuation_ids"][:4])

    def test_a_callback_returning_true_stops_generation(self):
        seen = []
        with self.model.session() as s:
            result = s.complete(REF["token_ids"], max_tokens=50, temperature=0, ignore_eos=True,
                                on_piece=lambda text, token: seen.append(token) or len(seen) == 2)
        self.assertEqual(result.stop_reason, kiln.StopReason.CALLBACK)
        self.assertEqual(result.n_generated, 2)
        self.assertEqual(seen, REF["greedy_continuation_ids"][:2])

    def test_a_raising_callback_is_reraised_and_the_session_survives(self):
        def boom(text, token):
            raise KeyError("from the callback")

        with self.model.session() as s:
            with self.assertRaises(KeyError):
                s.complete(REF["token_ids"], max_tokens=8, temperature=0, on_piece=boom)
            s.reset()
            self.assertEqual(s.complete(REF["token_ids"], max_tokens=2, temperature=0,
                                        ignore_eos=True).ids, REF["greedy_continuation_ids"][:2])

    def test_stop_strings_end_generation_without_being_streamed(self):
        text = REF["greedy_continuation_text"]
        stop = text[6:11]  # a string from the middle of the greedy text
        with self.model.session() as s:
            result = s.complete(REF["token_ids"], max_tokens=16, temperature=0, ignore_eos=True, stop=[stop])
        self.assertEqual(result.stop_reason, kiln.StopReason.STRING)
        self.assertEqual(result.text, text[: text.index(stop)])

    def test_precision_option_on_the_cpu(self):
        # F32 is the CPU's own precision; BF16 is a CUDA precision.
        with self.runtime.load_model(TINY_QWEN2, precision=kiln.Precision.F32) as model:
            self.assertEqual(model.info.vocab_size, 512)
        with self.assertRaises(kiln.UnsupportedError) as cm:
            self.runtime.load_model(TINY_QWEN2, precision=kiln.Precision.BF16)
        self.assertIn("KILN_PRECISION_BF16", cm.exception.message)

    def test_errors_map_to_exceptions_with_kiln_messages(self):
        with self.assertRaises(kiln.NotFoundError) as cm:
            self.runtime.load_model("/no/such/model-dir")
        self.assertEqual(cm.exception.status, kiln.raw.KILN_ERR_NOT_FOUND)
        self.assertEqual(cm.exception.status_name, "KILN_ERR_NOT_FOUND")
        self.assertIn("/no/such/model-dir", cm.exception.message)
        with self.model.session() as s:
            with self.assertRaises(kiln.OutOfRangeError) as cm:
                s.forward([REF["vocab_size"] + 5])
            self.assertIn(str(REF["vocab_size"] + 5), cm.exception.message)
        with self.assertRaises(kiln.InvalidArgumentError):
            kiln.Runtime(kiln.Backend.CPU, n_threads=-3)
        # Tensor parallelism splits models across CUDA GPUs only.
        with self.assertRaises(kiln.UnsupportedError) as cm:
            kiln.Runtime(kiln.Backend.CPU, tensor_parallel=2)
        self.assertIn("tensor_parallel is 2", cm.exception.message)
        with self.assertRaises(kiln.OutOfRangeError):
            self.model.detokenize([10**6])

    def test_context_full_is_reported_by_forward_and_by_the_stream(self):
        with self.model.session(context_length=8) as s:
            with self.assertRaises(kiln.ContextFullError):
                s.forward(REF["token_ids"])
            with self.assertRaises(kiln.ContextFullError):
                list(s.generate(REF["token_ids"], max_tokens=4))

    def test_two_threads_generate_on_two_sessions_of_one_model(self):
        n = len(REF["greedy_continuation_ids"])
        results, errors = {}, []

        def work(key):
            try:
                with self.model.session() as s:
                    results[key] = s.complete(REF["token_ids"], max_tokens=n, temperature=0, ignore_eos=True).ids
            except BaseException as e:  # noqa: BLE001 - reported by the assertion below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(results, {0: REF["greedy_continuation_ids"], 1: REF["greedy_continuation_ids"]})


class LifetimeTest(unittest.TestCase):
    def test_context_managers_and_close_free_handles(self):
        with cpu_runtime() as rt:
            with rt.load_model(TINY_QWEN2) as model:
                with model.session() as s:
                    s.forward([1, 2])
                self.assertTrue(s.closed)
                with self.assertRaises(kiln.Error):
                    s.forward([1])
            self.assertTrue(model.closed)
        self.assertTrue(rt.closed)

    def test_closing_the_runtime_closes_its_models_and_sessions_first(self):
        rt = cpu_runtime()
        model = rt.load_model(TINY_QWEN2)
        s = model.session()
        rt.close()
        self.assertTrue(s.closed and model.closed and rt.closed)
        rt.close()  # idempotent

    def test_a_session_outlives_its_closed_model(self):
        with cpu_runtime() as rt:
            model = rt.load_model(TINY_QWEN2)
            s = model.session()
            model.close()
            self.assertEqual(s.complete(REF["token_ids"], max_tokens=2, temperature=0, ignore_eos=True).ids,
                             REF["greedy_continuation_ids"][:2])

    def test_many_handles_closed_or_collected_do_not_leak(self):
        with cpu_runtime() as rt:
            model = rt.load_model(TINY_QWEN2)
            model.session().close()  # warm up allocator caches
            before = malloc_in_use()
            for _ in range(40):
                model.session().close()  # explicit close
            for _ in range(40):
                model.session()  # dropped: freed by the finalizer
            for _ in range(20):
                with rt.load_model(TINY_QWEN2):
                    pass
            gc.collect()
            growth = malloc_in_use() - before
            # One leaked session alone holds its whole KV cache (megabytes for this model).
            self.assertLess(growth, 2 << 20, f"C heap grew by {growth} bytes")


class TokenizerTest(unittest.TestCase):
    # hf_ref.json's token_ids are HF's ids of exactly this prefix of prompt_text (its prompt_decoded).
    PHRASE = "The quick brown fox jumps over"

    def test_standalone_and_model_tokenizers_match_transformers(self):
        self.assertTrue(REF["prompt_text"].startswith(self.PHRASE))
        with kiln.Tokenizer.load(TINY_QWEN2) as tok:
            self.assertEqual(tok.decode(REF["token_ids"]), self.PHRASE)
            ids = tok.encode(self.PHRASE)
            self.assertEqual(ids, REF["token_ids"])
            self.assertEqual(tok.decode(ids), self.PHRASE)
            self.assertEqual(tok.vocab_size, REF["vocab_size"])
        self.assertTrue(tok.closed)
        with self.assertRaises(kiln.Error):
            tok.encode(self.PHRASE)
        tok.close()  # idempotent

        with cpu_runtime() as rt:
            model = rt.load_model(TINY_QWEN2)
            borrowed = model.tokenizer
            del model  # the borrowed tokenizer keeps the Model alive
            gc.collect()
            self.assertFalse(borrowed.owned)
            self.assertEqual(borrowed.encode(self.PHRASE), REF["token_ids"])
            self.assertEqual(borrowed.vocab_size, REF["vocab_size"])
            borrowed.close()  # detaches without freeing the model's tokenizer
            self.assertEqual(rt.load_model(TINY_QWEN2).tokenizer.decode(REF["token_ids"]), self.PHRASE)
        self.assertTrue(borrowed.closed)

    def test_batch_and_threaded_encode_match_the_single_call(self):
        texts = [self.PHRASE, "", "Hello, world!", "<|im_start|>user\nHi<|im_end|>", "Grüße 🙂"] * 50
        with kiln.Tokenizer.load(TINY_QWEN2) as tok:
            for threads in (1, 2, 4):
                got = tok.encode_batch(texts, parse_special=True, n_threads=threads)
                self.assertEqual(got[0], REF["token_ids"])  # HF's ids
                self.assertEqual(got, [tok.encode(t, parse_special=True) for t in texts])
            self.assertEqual(tok.encode_batch([]), [])
            long_text = "\n".join(texts) * 300  # ~0.5 MB: cut into pieces on several threads
            single = tok.encode(long_text, parse_special=True)
            for threads in (1, 2, 4):
                self.assertEqual(tok.encode_threaded(long_text, parse_special=True, n_threads=threads), single)
            with self.assertRaises(kiln.InvalidArgumentError) as caught:
                tok.encode_batch([b"fine", b"bad \xff", b"worse \xc3"])
            self.assertIn("texts[1]", str(caught.exception))
            with self.assertRaises(kiln.InvalidArgumentError):
                tok.encode_batch(["a"], n_threads=-1)
            with self.assertRaises(kiln.InvalidArgumentError):
                tok.encode_threaded(b"bad \xff", n_threads=2)

    def test_a_missing_tokenizer_json_raises_not_found(self):
        with self.assertRaises(kiln.NotFoundError):
            kiln.Tokenizer.load(TINY_QWEN2 / "no-such-dir")

    def test_train_save_and_reload(self):
        import tempfile
        from pathlib import Path
        with tempfile.TemporaryDirectory() as d:
            corpus = Path(d) / "corpus.txt"
            corpus.write_text("low lower lowest newer newest wider widest\n" * 50, encoding="utf-8")
            stages = []
            tok = kiln.Tokenizer.train([corpus], 300, special_tokens=["<|end|>"],
                                       progress=lambda f, stage: stages.append(stage))
            with tok:
                self.assertIn("merge", stages)
                self.assertEqual(stages[-1], "done")
                text = "lowest wider 🙂 新"
                ids = tok.encode(text)
                self.assertEqual(tok.decode(ids), text)
                # "low", " lowest" and " wider" are training words seen 50 times: one token each.
                self.assertEqual(len(tok.encode("low lowest wider")), 3)
                self.assertEqual(tok.encode("<|end|>", parse_special=True), [tok.vocab_size - 1])
                tok.save(Path(d) / "out")
                with kiln.Tokenizer.load(Path(d) / "out") as again:
                    self.assertEqual(again.encode(text), ids)
            with self.assertRaises(kiln.CancelledError):
                kiln.Tokenizer.train([corpus], 300, progress=lambda f, stage: True)
            with self.assertRaises(kiln.InvalidArgumentError):
                kiln.Tokenizer.train([corpus], 100)
            with kiln.Tokenizer.load(TINY_QWEN2) as loaded, self.assertRaises(kiln.UnsupportedError):
                loaded.save(Path(d) / "copy")


class CallbackTest(unittest.TestCase):
    def test_progress_callback_sees_the_load_and_can_cancel_it(self):
        with cpu_runtime() as rt:
            fractions = []
            with rt.load_model(TINY_QWEN2, progress=lambda f, stage: fractions.append(f)):
                pass
            self.assertEqual(fractions[-1], 1.0)
            self.assertEqual(fractions, sorted(fractions))
            with self.assertRaises(kiln.CancelledError):
                rt.load_model(TINY_QWEN2, progress=lambda f, stage: True)
            with self.assertRaises(ZeroDivisionError):
                rt.load_model(TINY_QWEN2, progress=lambda f, stage: 1 / 0)

    def test_log_callbacks_receive_messages(self):
        runtime_log = []
        with cpu_runtime(log=lambda level, msg: runtime_log.append((level, msg)), log_level=kiln.LogLevel.DEBUG) as rt:
            rt.load_model(TINY_QWEN2).close()
        self.assertTrue(any("loaded Qwen2ForCausalLM" in m for _, m in runtime_log), runtime_log)
        self.assertTrue(all(isinstance(level, kiln.LogLevel) for level, _ in runtime_log))

        process_log = []
        kiln.set_log_callback(lambda level, msg: process_log.append(msg), kiln.LogLevel.DEBUG)
        try:
            with kiln.Runtime(kiln.Backend.CPU, n_threads=1, log_level=kiln.LogLevel.DEBUG):
                pass
        finally:
            kiln.set_log_callback(None)
        self.assertTrue(any("runtime created" in m for m in process_log), process_log)


if __name__ == "__main__":
    unittest.main()
