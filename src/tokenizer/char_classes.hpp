// Unicode character classes used by HF components, matching Rust's char methods that HF calls.
#pragma once

namespace kiln::tok {

bool is_whitespace(char32_t cp);   // char::is_whitespace: the White_Space property
bool is_numeric(char32_t cp);      // char::is_numeric: general category Nd, Nl or No
bool is_punctuation(char32_t cp);  // ASCII punctuation or general category P*

}  // namespace kiln::tok
