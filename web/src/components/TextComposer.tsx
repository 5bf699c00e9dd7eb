// Typed message box: Enter or the Send button sends a `text` message.
import { useState, type FormEvent } from "react";
import { SendIcon } from "./Icons";

interface Props {
  disabled: boolean;
  onSend: (text: string) => boolean;
}

export function TextComposer({ disabled, onSend }: Props) {
  const [text, setText] = useState("");
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (onSend(text)) setText("");
  };
  return (
    <form className="composer" onSubmit={submit}>
      <label htmlFor="text-input" className="visually-hidden">
        Type a message
      </label>
      <input
        id="text-input"
        data-testid="text-input"
        type="text"
        autoComplete="off"
        placeholder={disabled ? "Start a conversation to type" : "Type a message"}
        value={text}
        disabled={disabled}
        onChange={(e) => setText(e.target.value)}
      />
      <button
        type="submit"
        className="btn btn-primary"
        data-testid="send-button"
        disabled={disabled || !text.trim()}
      >
        <SendIcon size={16} /> Send
      </button>
    </form>
  );
}
