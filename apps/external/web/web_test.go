package web_test

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"github.com/chatpoc/chat-poc/apps/external/web"
)

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(web.FS(), name)
	if err != nil {
		t.Fatalf("embedded UI: %v", err)
	}
	return string(b)
}

// TestTestIDContract keeps the data-testid hooks that end-to-end tests use
// from disappearing in a refactor of the UI.
func TestTestIDContract(t *testing.T) {
	t.Parallel()
	src := read(t, "index.html") + read(t, "app.js")
	for _, id := range []string{
		"conn-status", "error", "error-text", "dismiss-error",
		"new-chat", "chat-list", "no-chats", "chat-item", "open-chat", "delete-chat",
		"chat-title", "placeholder", "message-list", "no-messages",
		"compose-form", "compose", "send",
		"message", "message-content", "message-time", "edited", "deleted",
		"edit", "delete-message", "edit-form", "edit-input", "save-edit", "cancel-edit",
	} {
		if !strings.Contains(src, `"data-testid": "`+id+`"`) && !strings.Contains(src, `data-testid="`+id+`"`) {
			t.Errorf("data-testid %q is gone from the UI", id)
		}
	}
}

// TestSelfContainedAndSafe checks the rules the UI is written to: nothing
// fetched from another host, no HTML built from strings, no blocking dialogs.
func TestSelfContainedAndSafe(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"index.html", "app.js", "style.css"} {
		src := read(t, name)
		if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/`).FindString(src); m != "" {
			t.Errorf("%s refers to another host: %q", name, m)
		}
		if m := regexp.MustCompile(`(?i)@import|url\(\s*['"]?https?:`).FindString(src); m != "" {
			t.Errorf("%s loads a remote resource: %q", name, m)
		}
	}
	js := read(t, "app.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s; build the DOM with createElement and textContent", bad)
		}
	}
	if m := regexp.MustCompile(`\b(alert|prompt|confirm)\(`).FindString(js); m != "" {
		t.Errorf("app.js calls %s…): blocking dialogs stall users and browser automation", m)
	}
}
