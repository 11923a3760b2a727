package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ardanlabs/jinja"
	"github.com/spf13/cobra"

	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/internal/exit"
)

func init() { register(newTemplateCmd) }

func newTemplateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "template",
		Short: "Work with a model's chat template as transformers does",
		Args:  usageArgs(cobra.NoArgs),
		// Runnable, so that an unknown subcommand is a usage error (exit
		// 2) rather than help with exit 0.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newTemplateRenderCmd())
	return cmd
}

func newTemplateRenderCmd() *cobra.Command {
	var (
		model, messages, toolsFile, dateString, name string
		addGenerationPrompt, tokens                  bool
	)
	cmd := &cobra.Command{
		Use:   "render",
		Short: "Render a conversation with a model's chat template, as transformers 5.17 does",
		Long: `Render a conversation with the model's chat template as transformers 5.17's
apply_chat_template does, and print the text (exactly, without a newline added).

The template is the one a transformers 5.17 tokenizer loads (chat_template.jinja,
else tokenizer_config.json), or the processor's (chat_template.json) when the
tokenizer has none. --template picks a named template; with --tools the
"tool_use" template is used when there is one. The template receives the
tokenizer config's bos_token, eos_token, … and, with --date-string, date_string;
without it the template may print today's date.

--messages and --tools are JSON files: a list of message objects and a list of
tool schemas. Keys keep their order, as in Python.

With --tokens, print {"text": …, "ids": […]}: the ids are the text tokenized
with add_special_tokens=False, as apply_chat_template(tokenize=True) does.

Exit codes: 0 rendered; 1 the template raised an exception (its message is
printed on stderr); 2 missing or invalid files or flags.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || messages == "" {
				return exit.BadInputError(errors.New("--model and --messages are required"))
			}
			msgs, err := chat.LoadJSON(messages)
			if err != nil {
				return exit.BadInputError(err)
			}
			kw := jinja.NewDict()
			kw.AsDict().Set("add_generation_prompt", jinja.NewBool(addGenerationPrompt))
			if toolsFile != "" {
				tools, err := chat.LoadJSON(toolsFile)
				if err != nil {
					return exit.BadInputError(err)
				}
				kw.AsDict().Set("tools", tools)
			}
			if cmd.Flags().Changed("date-string") {
				kw.AsDict().Set("date_string", jinja.NewString(dateString))
			}
			src, err := pickTemplate(model, name, toolsFile != "")
			if err != nil {
				return exit.BadInputError(err)
			}
			special, err := chat.LoadSpecialTokens(model)
			if err != nil {
				return exit.BadInputError(err)
			}
			req, err := chat.NewRequest(msgs, kw, special)
			if err != nil {
				return exit.BadInputError(err)
			}
			tpl, err := chat.Compile(src)
			if err != nil {
				return exit.BadInputError(fmt.Errorf("%s: chat template: %w", model, err))
			}
			text, err := tpl.Render(req)
			var te *chat.TemplateError
			switch {
			case errors.As(err, &te):
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", te.Type, te.Message)
				return fmt.Errorf("the chat template raised %s: %w", te.Type, exit.ErrCheckFailed)
			case err != nil:
				return exit.BadInputError(err)
			}
			if !tokens {
				_, err := fmt.Fprint(cmd.OutOrStdout(), text)
				return err
			}
			tok, err := chat.LoadTokenizer(model)
			if err != nil {
				return exit.BadInputError(err)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetEscapeHTML(false)
			return enc.Encode(struct {
				Text string `json:"text"`
				IDs  []int  `json:"ids"`
			}{text, tok.Encode(text, false)})
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "model directory (required)")
	f.StringVar(&messages, "messages", "", "JSON file with the list of messages (required)")
	f.BoolVar(&addGenerationPrompt, "add-generation-prompt", false, "append the assistant header")
	f.StringVar(&dateString, "date-string", "", `date_string for the template, e.g. "27 Nov 2026"`)
	f.BoolVar(&tokens, "tokens", false, `print {"text": …, "ids": […]} with the token ids`)
	f.StringVar(&name, "template", "", "name of the template to use when the model has several")
	f.StringVar(&toolsFile, "tools", "", "JSON file with the list of tool schemas")
	return cmd
}

// pickTemplate returns the template source apply_chat_template would use:
// the tokenizer's, else the processor's.
func pickTemplate(model, name string, withTools bool) (string, error) {
	ts, err := chat.FindTemplates(model)
	if err != nil {
		return "", err
	}
	ld, err := ts.For(chat.LoaderTokenizer)
	if err == nil && ld == nil {
		ld, err = ts.For(chat.LoaderProcessor)
	}
	if err != nil {
		return "", err
	}
	if ld == nil {
		return "", fmt.Errorf("%s: no chat template (looked for chat_template.jinja, chat_template.json, tokenizer_config.json and processor_config.json)", model)
	}
	_, src, err := ld.Select(name, withTools)
	return src, err
}
