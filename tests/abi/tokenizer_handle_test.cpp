// kiln_tokenizer_*: a tokenizer.json loaded without a model, through the public ABI only. Expected
// ids are the HF-identical references in tests/fixtures/tokenizers/<name>/expected_lenml.jsonl
// (HF encode(text, add_special_tokens=False), i.e. special-token text parsed).
#include <algorithm>
#include <thread>

#include "abi_util.hpp"

namespace kiln_abi_test {
namespace {

using nlohmann::json;

struct TokenizerDeleter {
  void operator()(kiln_tokenizer* t) const { kiln_tokenizer_free(t); }
};
using TokenizerPtr = std::unique_ptr<kiln_tokenizer, TokenizerDeleter>;

fs::path tokenizer_fixture(const std::string& name) { return fixtures() / "tokenizers" / name; }

// A directory with the fixture's tokenizer.json (stored gzipped) and tokenizer_config.json.
fs::path unpacked_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("kiln-abi-tok-" + std::to_string(::getpid()) + "-" + name);
  if (fs::exists(dir / "tokenizer.json")) return dir;
  fs::create_directories(dir);
  const std::string cmd = "gzip -dc '" + (tokenizer_fixture(name) / "tokenizer.json.gz").string() +
                          "' > '" + (dir / "tokenizer.json").string() + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  fs::copy_file(tokenizer_fixture(name) / "tokenizer_config.json", dir / "tokenizer_config.json",
                fs::copy_options::overwrite_existing);
  return dir;
}

TokenizerPtr load_tokenizer(const fs::path& path) {
  kiln_tokenizer* t = nullptr;
  const kiln_status st = kiln_tokenizer_load(path.string().c_str(), &t);
  EXPECT_EQ(st, KILN_OK) << path << ": " << kiln_last_error();
  return TokenizerPtr(t);
}

std::vector<int32_t> encode(const kiln_tokenizer* t, const std::string& text, uint32_t flags) {
  size_t n = 0;
  kiln_status st = kiln_tokenizer_encode(t, text.data(), text.size(), flags, nullptr, 0, &n);
  std::vector<int32_t> ids(n);
  if (st == KILN_ERR_BUFFER_TOO_SMALL) {
    st = kiln_tokenizer_encode(t, text.data(), text.size(), flags, ids.data(), ids.size(), &n);
  }
  EXPECT_EQ(st, KILN_OK) << kiln_last_error();
  return ids;
}

std::string decode(const kiln_tokenizer* t, const std::vector<int32_t>& ids, uint32_t flags) {
  size_t n = 0;
  kiln_status st = kiln_tokenizer_decode(t, ids.data(), ids.size(), flags, nullptr, 0, &n);
  std::string text(n, '\0');
  if (st == KILN_ERR_BUFFER_TOO_SMALL) {
    st = kiln_tokenizer_decode(t, ids.data(), ids.size(), flags, text.data(), text.size(), &n);
  }
  EXPECT_EQ(st, KILN_OK) << kiln_last_error();
  return text;
}

struct Row {
  std::string text, decoded;
  std::vector<int32_t> ids;
};

std::vector<Row> reference_rows(const std::string& name) {
  std::ifstream texts(fixtures() / "tokenizers" / "corpus.jsonl");
  std::ifstream expected(tokenizer_fixture(name) / "expected_lenml.jsonl");
  std::vector<Row> rows;
  std::string a, b;
  while (std::getline(texts, a) && std::getline(expected, b)) {
    const json t = json::parse(a), e = json::parse(b);
    rows.push_back({t["text"].get<std::string>(), e["decoded"].get<std::string>(),
                    e["ids"].get<std::vector<int32_t>>()});
  }
  return rows;
}

int32_t vocab_size(const kiln_tokenizer* t) {
  int32_t size = -1;
  EXPECT_EQ(kiln_tokenizer_vocab_size(t, &size), KILN_OK) << kiln_last_error();
  return size;
}

TEST(TokenizerHandle, DirectoryAndFileLoadTheSameTokenizerAndMatchHf) {
  for (const std::string name : {"qwen3", "mistral"}) {
    const fs::path dir = unpacked_dir(name);
    TokenizerPtr from_dir = load_tokenizer(dir);
    TokenizerPtr from_file = load_tokenizer(dir / "tokenizer.json");
    ASSERT_TRUE(from_dir && from_file);
    const std::vector<Row> rows = reference_rows(name);
    ASSERT_GT(rows.size(), 100u);
    for (size_t i = 0; i < rows.size(); ++i) {
      ASSERT_EQ(encode(from_dir.get(), rows[i].text, KILN_TOKENIZE_PARSE_SPECIAL), rows[i].ids)
          << name << " line " << i;
      ASSERT_EQ(encode(from_file.get(), rows[i].text, KILN_TOKENIZE_PARSE_SPECIAL), rows[i].ids)
          << name << " line " << i;
      ASSERT_EQ(decode(from_dir.get(), rows[i].ids, 0), rows[i].decoded) << name << " line " << i;
    }
    EXPECT_EQ(vocab_size(from_dir.get()), vocab_size(from_file.get()));
  }
}

TEST(TokenizerHandle, VocabSizeCountsAddedTokens) {
  TokenizerPtr t = load_tokenizer(unpacked_dir("qwen3"));
  const json j = json::parse(read_file(unpacked_dir("qwen3") / "tokenizer.json"));
  int32_t max_id = 0;
  for (const auto& [token, id] : j["model"]["vocab"].items())
    max_id = std::max(max_id, id.get<int32_t>());
  for (const auto& added : j["added_tokens"]) max_id = std::max(max_id, added["id"].get<int32_t>());
  EXPECT_EQ(vocab_size(t.get()), max_id + 1);
  int32_t size = -1;
  EXPECT_EQ(kiln_tokenizer_vocab_size(nullptr, &size), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenizer_vocab_size(t.get(), nullptr), KILN_ERR_INVALID_ARGUMENT);
}

TEST(TokenizerHandle, SpecialTextIsPlainUnlessAskedFor) {
  TokenizerPtr t = load_tokenizer(unpacked_dir("qwen3"));
  const json j = json::parse(read_file(unpacked_dir("qwen3") / "tokenizer.json"));
  int32_t im_start = -1;
  for (const auto& added : j["added_tokens"])
    if (added["content"] == "<|im_start|>") im_start = added["id"].get<int32_t>();
  ASSERT_GE(im_start, 0);
  EXPECT_EQ(encode(t.get(), "<|im_start|>", KILN_TOKENIZE_PARSE_SPECIAL),
            std::vector<int32_t>{im_start});
  const auto plain = encode(t.get(), "<|im_start|>", 0);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), im_start), 0);
}

TEST(TokenizerHandle, ErrorsAreSpecific) {
  kiln_tokenizer* t = reinterpret_cast<kiln_tokenizer*>(1);
  EXPECT_EQ(kiln_tokenizer_load("/nonexistent/kiln-tokenizer-dir", &t), KILN_ERR_NOT_FOUND);
  EXPECT_EQ(t, nullptr);
  EXPECT_NE(std::string(kiln_last_error()).find("/nonexistent/kiln-tokenizer-dir"),
            std::string::npos);
  const fs::path empty =
      fs::temp_directory_path() / ("kiln-abi-tok-empty-" + std::to_string(::getpid()));
  fs::create_directories(empty);
  EXPECT_EQ(kiln_tokenizer_load(empty.string().c_str(), &t), KILN_ERR_NOT_FOUND);
  EXPECT_NE(std::string(kiln_last_error()).find("tokenizer.json"), std::string::npos);
  fs::remove_all(empty);
  EXPECT_EQ(kiln_tokenizer_load(nullptr, &t), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenizer_load("x", nullptr), KILN_ERR_INVALID_ARGUMENT);

  TokenizerPtr tok = load_tokenizer(unpacked_dir("qwen3"));
  size_t n = 0;
  EXPECT_EQ(kiln_tokenizer_encode(nullptr, "a", 1, 0, nullptr, 0, &n), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenizer_encode(tok.get(), nullptr, 3, 0, nullptr, 0, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenizer_encode(tok.get(), "a", 1, 0x80, nullptr, 0, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenizer_encode(tok.get(), "a\xff", 2, 0, nullptr, 0, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("UTF-8"), std::string::npos);
  const int32_t bad = vocab_size(tok.get());
  EXPECT_EQ(kiln_tokenizer_decode(tok.get(), &bad, 1, 0, nullptr, 0, &n), KILN_ERR_OUT_OF_RANGE);
  EXPECT_EQ(kiln_tokenizer_decode(tok.get(), nullptr, 1, 0, nullptr, 0, &n),
            KILN_ERR_INVALID_ARGUMENT);
  // Empty input is fine and needs no buffer.
  EXPECT_EQ(kiln_tokenizer_encode(tok.get(), nullptr, 0, 0, nullptr, 0, &n), KILN_OK);
  EXPECT_EQ(n, 0u);
  kiln_tokenizer_free(nullptr);
}

TEST(TokenizerHandle, OneHandleServesManyThreads) {
  TokenizerPtr t = load_tokenizer(unpacked_dir("qwen3"));
  const std::vector<Row> rows = reference_rows("qwen3");
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (size_t i = static_cast<size_t>(w); i < rows.size() * 4; i += 4) {
        const Row& row = rows[i % rows.size()];
        size_t n = 0;
        std::vector<int32_t> ids(row.ids.size() + 8);
        if (kiln_tokenizer_encode(t.get(), row.text.data(), row.text.size(),
                                  KILN_TOKENIZE_PARSE_SPECIAL, ids.data(), ids.size(),
                                  &n) != KILN_OK ||
            std::vector<int32_t>(ids.begin(), ids.begin() + static_cast<long>(n)) != row.ids) {
          ++mismatches[static_cast<size_t>(w)];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(TokenizerHandle, ModelTokenizerIsBorrowedAndAgreesWithKilnTokenize) {
  const kiln_tokenizer* none = reinterpret_cast<const kiln_tokenizer*>(0x1);
  EXPECT_EQ(kiln_model_tokenizer(nullptr, &none), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(none, nullptr);
  RuntimePtr rt = make_cpu_runtime();
  ModelPtr model = load(rt.get(), source_dir() / "models" / "kjv-tiny");
  ASSERT_TRUE(model);
  const kiln_tokenizer* t = nullptr;
  KILN_ASSERT_OK(kiln_model_tokenizer(model.get(), &t));
  ASSERT_NE(t, nullptr);
  const kiln_tokenizer* again = nullptr;
  KILN_ASSERT_OK(kiln_model_tokenizer(model.get(), &again));
  EXPECT_EQ(again, t);  // the same borrowed handle every time
  const std::string text = "In the beginning God created the heaven and the earth.";
  for (uint32_t flags : {0u, unsigned(KILN_TOKENIZE_ADD_SPECIAL)}) {
    size_t n = 0;
    std::vector<int32_t> via_model(256);
    KILN_ASSERT_OK(kiln_tokenize(model.get(), text.data(), text.size(), flags, via_model.data(),
                                 via_model.size(), &n));
    via_model.resize(n);
    EXPECT_EQ(encode(t, text, flags), via_model);
  }
  EXPECT_EQ(decode(t, encode(t, text, 0), 0), text);
}

// --- kiln_tokenizer_train / kiln_tokenizer_save ---------------------------------------------

fs::path train_dir(const std::string& tag) {
  const fs::path dir =
      fs::temp_directory_path() / ("kiln-abi-train-" + std::to_string(::getpid()) + "-" + tag);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

fs::path write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

TEST(TokenizerTrain, TrainsSavesAtomicallyAndReloadsIdentically) {
  const fs::path dir = train_dir("basic");
  const std::string corpus =
      write_text(dir / "a.txt", repeat("low lower lowest newer newest wider widest\n", 40))
          .string();
  const std::string corpus2 =
      write_text(dir / "b.txt", repeat("naïve café 日本 🙂\n", 30)).string();
  const char* files[] = {corpus.c_str(), corpus2.c_str()};
  const char* specials[] = {"<|bos|>", "<|eos|>"};
  kiln_tokenizer_train_options opts;
  KILN_ASSERT_OK(kiln_tokenizer_train_options_default(&opts, sizeof opts));
  EXPECT_EQ(opts.vocab_size, 32768);
  EXPECT_EQ(opts.min_frequency, 2);
  EXPECT_EQ(opts.pattern, nullptr);
  opts.vocab_size = 400;
  opts.special_tokens = specials;
  opts.n_special_tokens = 2;
  struct Seen {
    std::vector<std::string> stages;
  } seen;
  opts.progress_fn = [](float, const char* stage, void* user) {
    static_cast<Seen*>(user)->stages.emplace_back(stage);
    return 0;
  };
  opts.progress_user_data = &seen;
  kiln_tokenizer* raw = nullptr;
  KILN_ASSERT_OK(kiln_tokenizer_train(files, 2, &opts, &raw));
  TokenizerPtr t(raw);
  ASSERT_FALSE(seen.stages.empty());
  EXPECT_EQ(seen.stages.back(), "done");

  int32_t size = 0;
  KILN_ASSERT_OK(kiln_tokenizer_vocab_size(t.get(), &size));
  EXPECT_GT(size, 258);
  EXPECT_LE(size, 400);
  EXPECT_EQ(encode(t.get(), "<|bos|>", KILN_TOKENIZE_PARSE_SPECIAL),
            std::vector<int32_t>{size - 2});
  const std::string text = "lowest naïve 🙂 unseen ЖЖ text\r\n";
  const auto ids = encode(t.get(), text, 0);
  EXPECT_EQ(decode(t.get(), ids, 0), text);

  // A directory path gets tokenizer.json; a .json path is the file itself.
  KILN_ASSERT_OK(kiln_tokenizer_save(t.get(), (dir / "out").string().c_str()));
  KILN_ASSERT_OK(kiln_tokenizer_save(t.get(), (dir / "named.json").string().c_str()));
  KILN_ASSERT_OK(kiln_tokenizer_save(t.get(), (dir / "named.json").string().c_str()));  // replace
  EXPECT_EQ(read_file(dir / "out" / "tokenizer.json"), read_file(dir / "named.json"));
  for (const auto& e : fs::directory_iterator(dir)) {  // no temporary file left behind
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }
  for (const fs::path& p : {dir / "out", dir / "named.json"}) {
    TokenizerPtr again = load_tokenizer(p);
    ASSERT_TRUE(again);
    EXPECT_EQ(encode(again.get(), text, 0), ids);
    // Loaded, not trained: there is nothing of kiln's own to save.
    EXPECT_EQ(kiln_tokenizer_save(again.get(), (dir / "copy").string().c_str()),
              KILN_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(kiln_last_error()).find("loaded, not trained"), std::string::npos);
  }

  // Same options and files on one thread: the identical file.
  opts.n_threads = 1;
  opts.progress_fn = nullptr;
  kiln_tokenizer* single = nullptr;
  KILN_ASSERT_OK(kiln_tokenizer_train(files, 2, &opts, &single));
  TokenizerPtr single_ptr(single);
  KILN_ASSERT_OK(kiln_tokenizer_save(single, (dir / "single.json").string().c_str()));
  EXPECT_EQ(read_file(dir / "single.json"), read_file(dir / "named.json"));
  fs::remove_all(dir);
}

TEST(TokenizerTrain, BadArgumentsAndCancelGiveStatuses) {
  const fs::path dir = train_dir("bad");
  const std::string corpus = write_text(dir / "a.txt", repeat("some words here\n", 50)).string();
  const char* files[] = {corpus.c_str()};
  kiln_tokenizer* t = reinterpret_cast<kiln_tokenizer*>(0x1);
  EXPECT_EQ(kiln_tokenizer_train(files, 1, nullptr, nullptr), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenizer_train(nullptr, 1, nullptr, &t), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(t, nullptr);
  EXPECT_EQ(kiln_tokenizer_train(files, 0, nullptr, &t), KILN_ERR_INVALID_ARGUMENT);
  const char* with_null[] = {corpus.c_str(), nullptr};
  EXPECT_EQ(kiln_tokenizer_train(with_null, 2, nullptr, &t), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("files[1]"), std::string::npos);

  kiln_tokenizer_train_options opts;
  EXPECT_EQ(kiln_tokenizer_train_options_default(&opts, sizeof opts - 1),
            KILN_ERR_VERSION_MISMATCH);
  KILN_ASSERT_OK(kiln_tokenizer_train_options_default(&opts, sizeof opts));
  opts.struct_size = sizeof opts + 8;
  EXPECT_EQ(kiln_tokenizer_train(files, 1, &opts, &t), KILN_ERR_VERSION_MISMATCH);
  KILN_ASSERT_OK(kiln_tokenizer_train_options_default(&opts, sizeof opts));
  opts.vocab_size = 200;
  EXPECT_EQ(kiln_tokenizer_train(files, 1, &opts, &t), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("vocab_size 200"), std::string::npos);
  opts.vocab_size = 300;
  opts.pattern = "([unclosed";
  EXPECT_EQ(kiln_tokenizer_train(files, 1, &opts, &t), KILN_ERR_FORMAT);
  opts.pattern = nullptr;
  opts.n_special_tokens = 1;  // special_tokens left NULL
  EXPECT_EQ(kiln_tokenizer_train(files, 1, &opts, &t), KILN_ERR_INVALID_ARGUMENT);
  opts.n_special_tokens = 0;
  const std::string missing = (dir / "missing.txt").string();
  const char* missing_files[] = {missing.c_str()};
  EXPECT_EQ(kiln_tokenizer_train(missing_files, 1, &opts, &t), KILN_ERR_NOT_FOUND);
  EXPECT_NE(std::string(kiln_last_error()).find("missing.txt"), std::string::npos);

  opts.progress_fn = [](float, const char*, void*) { return 1; };
  EXPECT_EQ(kiln_tokenizer_train(files, 1, &opts, &t), KILN_ERR_CANCELLED);
  EXPECT_EQ(t, nullptr);

  EXPECT_EQ(kiln_tokenizer_save(nullptr, "x"), KILN_ERR_INVALID_ARGUMENT);
  opts.progress_fn = nullptr;
  KILN_ASSERT_OK(kiln_tokenizer_train(files, 1, &opts, &t));
  TokenizerPtr owned(t);
  EXPECT_EQ(kiln_tokenizer_save(t, nullptr), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenizer_save(t, (dir / "no" / "such" / "dir.json").string().c_str()),
            KILN_ERR_NOT_FOUND);
  fs::remove_all(dir);
}

// kiln_tokenizer_encode_batch into exactly-sized buffers: the first call (capacity 0) must report
// the size and the offsets, the second fills them.
std::vector<std::vector<int32_t>> encode_batch(const kiln_tokenizer* t,
                                               const std::vector<std::string>& texts,
                                               uint32_t flags, int32_t threads) {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  for (const std::string& s : texts) {
    ptrs.push_back(s.data());
    lens.push_back(s.size());
  }
  std::vector<size_t> offsets(texts.size() + 1, 12345);
  size_t n = 0;
  EXPECT_EQ(kiln_tokenizer_encode_batch(t, ptrs.data(), lens.data(), texts.size(), flags, threads,
                                        nullptr, 0, offsets.data(), &n),
            n == 0 && texts.empty() ? KILN_OK : KILN_ERR_BUFFER_TOO_SMALL)
      << kiln_last_error();
  EXPECT_EQ(offsets.back(), n);
  const std::vector<size_t> reported = offsets;
  std::vector<int32_t> ids(n);
  EXPECT_EQ(kiln_tokenizer_encode_batch(t, ptrs.data(), lens.data(), texts.size(), flags, threads,
                                        ids.data(), ids.size(), offsets.data(), &n),
            KILN_OK)
      << kiln_last_error();
  EXPECT_EQ(offsets, reported);
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i < texts.size(); ++i) {
    out.emplace_back(ids.begin() + static_cast<ptrdiff_t>(offsets[i]),
                     ids.begin() + static_cast<ptrdiff_t>(offsets[i + 1]));
  }
  return out;
}

std::vector<int32_t> encode_threaded(const kiln_tokenizer* t, const std::string& text,
                                     uint32_t flags, int32_t threads) {
  size_t n = 0;
  kiln_status st =
      kiln_tokenizer_encode_threaded(t, text.data(), text.size(), flags, threads, nullptr, 0, &n);
  std::vector<int32_t> ids(n);
  if (st == KILN_ERR_BUFFER_TOO_SMALL) {
    st = kiln_tokenizer_encode_threaded(t, text.data(), text.size(), flags, threads, ids.data(),
                                        ids.size(), &n);
  }
  EXPECT_EQ(st, KILN_OK) << kiln_last_error();
  return ids;
}

// The batch call on the conformance corpus: every text's ids equal the HF-identical fixture ids
// and the single call's, at 1, 2 and 4 threads, for a byte-level and a SentencePiece tokenizer.
TEST(TokenizerBatch, EveryTextMatchesTheReferenceAtAnyThreadCount) {
  for (const std::string name : {"qwen3", "mistral"}) {
    SCOPED_TRACE(name);
    TokenizerPtr t = load_tokenizer(unpacked_dir(name));
    const std::vector<Row> rows = reference_rows(name);
    ASSERT_GT(rows.size(), 100u);
    // Repeated so that every thread gets several runs of texts.
    std::vector<std::string> texts;
    for (int copy = 0; copy < 4; ++copy) {
      for (const Row& row : rows) texts.push_back(row.text);
    }
    for (const int32_t threads : {1, 2, 4}) {
      SCOPED_TRACE("threads " + std::to_string(threads));
      const auto got = encode_batch(t.get(), texts, KILN_TOKENIZE_PARSE_SPECIAL, threads);
      ASSERT_EQ(got.size(), texts.size());
      size_t mismatches = 0;
      for (size_t i = 0; i < texts.size(); ++i) {
        const Row& row = rows[i % rows.size()];
        if (got[i] != row.ids) ++mismatches;
        EXPECT_EQ(got[i], row.ids) << "text " << i;
        if (mismatches > 5) break;
      }
    }
    // With BOS/EOS added and special text left plain, too: as the single call does.
    std::vector<std::string> few(texts.begin(), texts.begin() + 200);
    const auto got = encode_batch(t.get(), few, KILN_TOKENIZE_ADD_SPECIAL, 2);
    for (size_t i = 0; i < few.size(); ++i) {
      EXPECT_EQ(got[i], encode(t.get(), few[i], KILN_TOKENIZE_ADD_SPECIAL)) << "text " << i;
    }
  }
}

// A long text (the corpus joined by newlines, about 300 KB: past the 128 KiB below which kiln
// does not cut) on 1, 2 and 4 threads gives the ids of the single call; with special tokens
// parsed and as plain text.
TEST(TokenizerBatch, ThreadedLongTextMatchesTheSingleCall) {
  for (const std::string name : {"qwen3", "llama3"}) {
    SCOPED_TRACE(name);
    TokenizerPtr t = load_tokenizer(unpacked_dir(name));
    std::string text;
    const std::vector<Row> rows = reference_rows(name);
    while (text.size() < 300000) {
      for (const Row& row : rows) text += row.text + "\n";
    }
    for (const uint32_t flags : {uint32_t{KILN_TOKENIZE_PARSE_SPECIAL}, uint32_t{0}}) {
      const std::vector<int32_t> single = encode(t.get(), text, flags);
      ASSERT_GT(single.size(), 1000u);
      for (const int32_t threads : {1, 2, 4}) {
        EXPECT_EQ(encode_threaded(t.get(), text, flags, threads), single)
            << "flags " << flags << ", threads " << threads;
      }
    }
  }
}

TEST(TokenizerBatch, ErrorsAreSpecific) {
  TokenizerPtr t = load_tokenizer(unpacked_dir("qwen3"));
  const char* texts[] = {"ok", "fine", "bad \xff here", nullptr, "also bad \xc3"};
  const size_t lens[] = {2, 4, 10, 0, 10};
  size_t offsets[6] = {}, n = 99;
  int32_t ids[64];
  // A NULL entry of length 0 is an empty text.
  ASSERT_EQ(kiln_tokenizer_encode_batch(t.get(), texts, lens, 2, 0, 2, ids, 64, offsets, &n),
            KILN_OK)
      << kiln_last_error();
  EXPECT_EQ(
      kiln_tokenizer_encode_batch(t.get(), texts + 3, lens + 3, 1, 0, 2, ids, 64, offsets, &n),
      KILN_OK);
  EXPECT_EQ(n, 0u);
  // Invalid UTF-8: the lowest bad text is named, with the byte the single call names.
  EXPECT_EQ(kiln_tokenizer_encode_batch(t.get(), texts, lens, 5, 0, 4, ids, 64, offsets, &n),
            KILN_ERR_INVALID_ARGUMENT);
  std::string msg = kiln_last_error();
  EXPECT_NE(msg.find("texts[2]"), std::string::npos) << msg;
  size_t single_n = 0;
  EXPECT_EQ(kiln_tokenizer_encode(t.get(), texts[2], lens[2], 0, ids, 64, &single_n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(msg.find(kiln_last_error()), std::string::npos) << msg;
  EXPECT_NE(msg.find("byte 4"), std::string::npos) << msg;
  // Too small: the size and the offsets come back.
  EXPECT_EQ(kiln_tokenizer_encode_batch(t.get(), texts, lens, 2, 0, 1, ids, 1, offsets, &n),
            KILN_ERR_BUFFER_TOO_SMALL);
  EXPECT_GT(n, 1u);
  EXPECT_EQ(offsets[2], n);
  EXPECT_NE(std::string(kiln_last_error()).find("room for " + std::to_string(n)),
            std::string::npos);
  // NULLs and bad arguments.
  const auto batch_status = [&](const kiln_tokenizer* tok, const char* const* tx, const size_t* ln,
                                size_t count, uint32_t flags, int32_t threads, size_t* off,
                                size_t* out_n) {
    return kiln_tokenizer_encode_batch(tok, tx, ln, count, flags, threads, ids, 64, off, out_n);
  };
  EXPECT_EQ(batch_status(nullptr, texts, lens, 2, 0, 1, offsets, &n), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(batch_status(t.get(), nullptr, lens, 2, 0, 1, offsets, &n), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("texts"), std::string::npos);
  EXPECT_EQ(batch_status(t.get(), texts, nullptr, 2, 0, 1, offsets, &n), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("text_lens"), std::string::npos);
  EXPECT_EQ(batch_status(t.get(), texts, lens, 2, 0, 1, nullptr, &n), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("offsets"), std::string::npos);
  EXPECT_EQ(batch_status(t.get(), texts, lens, 2, 0, 1, offsets, nullptr),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(batch_status(t.get(), texts, lens, 2, 0, -1, offsets, &n), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("n_threads is -1"), std::string::npos);
  EXPECT_EQ(batch_status(t.get(), texts, lens, 2, 1u << 7, 1, offsets, &n),
            KILN_ERR_INVALID_ARGUMENT);
  const size_t null_len[] = {3};
  const char* null_text[] = {nullptr};
  EXPECT_EQ(batch_status(t.get(), null_text, null_len, 1, 0, 1, offsets, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("texts[0] is NULL"), std::string::npos);
  // An empty batch is fine.
  EXPECT_EQ(batch_status(t.get(), nullptr, nullptr, 0, 0, 0, offsets, &n), KILN_OK);
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(offsets[0], 0u);

  // The threaded call: the single call's rules.
  std::string long_text(300000, 'a');
  long_text[200001] = '\xfe';
  EXPECT_EQ(kiln_tokenizer_encode_threaded(t.get(), long_text.data(), long_text.size(), 0, 4, ids,
                                           64, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("byte 200001"), std::string::npos)
      << kiln_last_error();
  EXPECT_EQ(kiln_tokenizer_encode_threaded(t.get(), nullptr, 5, 0, 2, ids, 64, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenizer_encode_threaded(nullptr, "a", 1, 0, 2, ids, 64, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenizer_encode_threaded(t.get(), "a", 1, 0, -3, ids, 64, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenizer_encode_threaded(t.get(), "a", 1, 1u << 5, 2, ids, 64, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenizer_encode_threaded(t.get(), "hello world", 11, 0, 2, ids, 1, &n),
            KILN_ERR_BUFFER_TOO_SMALL);
  EXPECT_EQ(n, 2u);
}

}  // namespace
}  // namespace kiln_abi_test
