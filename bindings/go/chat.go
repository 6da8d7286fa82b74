package kiln

/*
#include <stdint.h>
#include <stdlib.h>
#include "kiln.h"
*/
import "C"

import (
	"unicode/utf8"
	"unsafe"
)

// ChatMessage is one conversation message. The JSON fields reach the template as parsed JSON;
// empty means absent.
type ChatMessage struct {
	Role          string  // "system", "user", "assistant", "tool", ...
	Content       *string // nil: the template sees content as None
	ToolCallsJSON string  // a JSON array: the message's tool_calls
	ExtraJSON     string  // a JSON object merged into the message (tool_call_id, name, ...)
}

// Message is a ChatMessage with a role and text content only.
func Message(role, content string) ChatMessage {
	return ChatMessage{Role: role, Content: &content}
}

// ChatOptions say how to render. A nil *ChatOptions means kiln's defaults (with a generation
// prompt); zero MaxSteps/MaxOutputBytes keep kiln's budgets.
type ChatOptions struct {
	NoGenerationPrompt bool   // true: do not end with the assistant header
	ToolsJSON          string // a JSON array of tool definitions: the template's tools
	ExtraContextJSON   string // a JSON object of extra template variables (enable_thinking, ...)
	TemplateOverride   string // a Jinja template used instead of the model's chat_template
	TemplateName       string // which named template when the config lists several
	NowUnixSeconds     int64  // strftime_now()'s clock; 0 = now
	MaxSteps           uint64 // evaluation budget (exceeded: StatusOutOfRange)
	MaxOutputBytes     uint64 // output budget in bytes (exceeded: StatusOutOfRange)
}

// cChat holds the C copies of one call's messages and options (cgo forbids passing Go memory that
// holds Go pointers), freed by free.
type cChat struct {
	messages *C.kiln_chat_message
	n        C.size_t
	options  *C.kiln_chat_options
	strings  []unsafe.Pointer
}

func (c *cChat) str(s string, absent bool) *C.char {
	if absent {
		return nil
	}
	p := C.CString(s)
	c.strings = append(c.strings, unsafe.Pointer(p))
	return p
}

func (c *cChat) free() {
	for _, p := range c.strings {
		C.free(p)
	}
	C.free(unsafe.Pointer(c.messages))
	C.free(unsafe.Pointer(c.options))
}

func newCChat(messages []ChatMessage, opts *ChatOptions) (*cChat, error) {
	c := &cChat{n: C.size_t(len(messages))}
	c.messages = (*C.kiln_chat_message)(C.calloc(C.size_t(len(messages)+1), C.sizeof_kiln_chat_message))
	c.options = (*C.kiln_chat_options)(C.calloc(1, C.sizeof_kiln_chat_options))
	if err := call(func() C.kiln_status {
		return C.kiln_chat_options_default(c.options, C.sizeof_kiln_chat_options)
	}); err != nil {
		c.free()
		return nil, err
	}
	cMessages := unsafe.Slice(c.messages, len(messages))
	for i, m := range messages {
		content := ""
		if m.Content != nil {
			content = *m.Content
		}
		cMessages[i].role = c.str(m.Role, false)
		cMessages[i].content = c.str(content, m.Content == nil)
		cMessages[i].tool_calls_json = c.str(m.ToolCallsJSON, m.ToolCallsJSON == "")
		cMessages[i].extra_json = c.str(m.ExtraJSON, m.ExtraJSON == "")
	}
	if opts != nil {
		if opts.NoGenerationPrompt {
			c.options.add_generation_prompt = 0
		}
		c.options.tools_json = c.str(opts.ToolsJSON, opts.ToolsJSON == "")
		c.options.extra_context_json = c.str(opts.ExtraContextJSON, opts.ExtraContextJSON == "")
		c.options.template_override = c.str(opts.TemplateOverride, opts.TemplateOverride == "")
		c.options.template_name = c.str(opts.TemplateName, opts.TemplateName == "")
		c.options.now_unix_seconds = C.int64_t(opts.NowUnixSeconds)
		if opts.MaxSteps != 0 {
			c.options.max_steps = C.uint64_t(opts.MaxSteps)
		}
		if opts.MaxOutputBytes != 0 {
			c.options.max_output_bytes = C.size_t(opts.MaxOutputBytes)
		}
	}
	return c, nil
}

// ChatRender renders a conversation with the model's chat template (or opts.TemplateOverride)
// exactly as HF transformers' apply_chat_template(tokenize=False) does.
func (m *Model) ChatRender(messages []ChatMessage, opts *ChatOptions) (string, error) {
	c, err := newCChat(messages, opts)
	if err != nil {
		return "", err
	}
	defer c.free()
	var out string
	err = m.with(func(p *C.kiln_model) error {
		text, err := fill(func(buf *C.char, capacity C.size_t, needed *C.size_t) C.kiln_status {
			return C.kiln_chat_render(p, c.messages, c.n, c.options, buf, capacity, needed)
		})
		out = string(bytesOf(text))
		return err
	})
	if err == nil && !utf8.ValidString(out) {
		return "", &Error{Status: StatusFormat, Message: "the chat template rendered invalid UTF-8"}
	}
	return out, err
}

// ChatRenderTokens renders and tokenizes for training: ids and mask of equal length, mask[i] = 1
// where the token belongs to an assistant reply as the template writes it, end-of-turn token
// included (kiln.h's kiln_chat_render_tokens).
func (m *Model) ChatRenderTokens(messages []ChatMessage, opts *ChatOptions) ([]int32, []uint8, error) {
	c, err := newCChat(messages, opts)
	if err != nil {
		return nil, nil, err
	}
	defer c.free()
	var ids []int32
	var mask []uint8
	err = m.with(func(p *C.kiln_model) error {
		var cIDs *C.int32_t
		var cMask *C.uint8_t
		var n C.size_t
		defer func() {
			C.free(unsafe.Pointer(cIDs))
			C.free(unsafe.Pointer(cMask))
		}()
		// C buffers (not Go slices): ids and mask are two pointers into memory kiln writes.
		if err := call(func() C.kiln_status {
			status := C.kiln_chat_render_tokens(p, c.messages, c.n, c.options, nil, nil, 0, &n)
			if status != C.KILN_ERR_BUFFER_TOO_SMALL {
				return status
			}
			cIDs = (*C.int32_t)(C.calloc(n+1, C.sizeof_int32_t))
			cMask = (*C.uint8_t)(C.calloc(n+1, 1))
			return C.kiln_chat_render_tokens(p, c.messages, c.n, c.options, cIDs, cMask, n, &n)
		}); err != nil {
			return err
		}
		ids = int32s(unsafe.Slice(cIDs, int(n)))
		mask = C.GoBytes(unsafe.Pointer(cMask), C.int(n))
		return nil
	})
	return ids, mask, err
}
