package kiln

import (
	"fmt"
	"unicode/utf8"

	"kiln.dev/kiln/raw"
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

// cChat holds one call's messages (packed by the raw layer) and its C options, freed by free.
type cChat struct {
	messages []raw.ChatMessage
	options  raw.Kiln_chat_options
}

func (c *cChat) free() { raw.DeleteKiln_chat_options(c.options) }

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func newCChat(messages []ChatMessage, opts *ChatOptions) (*cChat, error) {
	for i, m := range messages {
		for _, f := range []*string{&m.Role, m.Content, &m.ToolCallsJSON, &m.ExtraJSON} {
			if f != nil {
				if err := checkNoNUL(fmt.Sprintf("kiln.ChatMessage %d", i), *f); err != nil {
					return nil, err
				}
			}
		}
	}
	c := &cChat{options: raw.NewKiln_chat_options()}
	if err := call(func() status { return raw.Kiln_chat_options_default(c.options) }); err != nil {
		c.free()
		return nil, err
	}
	for _, m := range messages {
		role := m.Role
		c.messages = append(c.messages, raw.ChatMessage{Role: &role, Content: m.Content,
			ToolCallsJSON: optional(m.ToolCallsJSON), ExtraJSON: optional(m.ExtraJSON)})
	}
	if opts != nil {
		if opts.NoGenerationPrompt {
			c.options.SetAdd_generation_prompt(0)
		}
		// The options own copies of these strings (kiln.i's memberin typemaps); "" leaves NULL.
		for _, f := range []struct {
			value string
			set   func(string)
		}{{opts.ToolsJSON, c.options.SetTools_json}, {opts.ExtraContextJSON, c.options.SetExtra_context_json},
			{opts.TemplateOverride, c.options.SetTemplate_override}, {opts.TemplateName, c.options.SetTemplate_name}} {
			if f.value != "" {
				f.set(f.value)
			}
		}
		c.options.SetNow_unix_seconds(opts.NowUnixSeconds)
		if opts.MaxSteps != 0 {
			c.options.SetMax_steps(opts.MaxSteps)
		}
		if opts.MaxOutputBytes != 0 {
			c.options.SetMax_output_bytes(int64(opts.MaxOutputBytes))
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
	err = m.with(func(p cModel) error {
		text, err := fill(func(buf []byte, needed *uint64) status {
			return raw.Kiln_chat_render(p, c.messages, c.options, buf, needed)
		})
		out = string(text)
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
	err = m.with(func(p cModel) error {
		var n uint64
		// ids and mask are two buffers of one capacity: the size first, then both at once.
		return call(func() status {
			st := raw.Kiln_chat_render_tokens(p, c.messages, c.options, nil, nil, 0, &n)
			if st != raw.KILN_ERR_BUFFER_TOO_SMALL {
				ids, mask = []int32{}, []uint8{}
				return st
			}
			ids, mask = make([]int32, n), make([]uint8, n)
			st = raw.Kiln_chat_render_tokens(p, c.messages, c.options, ids, mask, int64(n), &n)
			ids, mask = ids[:n], mask[:n]
			return st
		})
	})
	if err != nil {
		return nil, nil, err
	}
	return ids, mask, err
}
