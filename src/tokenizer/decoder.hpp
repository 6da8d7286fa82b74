// HF decoders (tokenizers/src/decoders): turn the token strings of a whole sequence back into
// text. Each step maps a list of strings to a list of strings (Decoder::decode_chain in HF); the
// final text is their concatenation.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/json_fields.hpp"

namespace kiln::tok {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual std::vector<std::string> decode_chain(std::vector<std::string> tokens) const = 0;
  // The raw bytes one token contributes in the middle of a sequence: no first-token or
  // whole-output edge rules (Metaspace's first-token prefix, Strip), and bytes are not
  // UTF-8-repaired (ByteLevel, ByteFallback give the raw byte values).
  virtual std::string decode_mid_token(std::string token) const = 0;
};

// Builds the decoder described by tokenizer.json's "decoder" (null → nullptr).
// Supported: ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence.
std::unique_ptr<Decoder> make_decoder(const Json& spec, const std::string& path);

}  // namespace kiln::tok
