import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { agentReducer, initialAgentState } from "../hooks/agentState";
import { eventToAction } from "../hooks/serverEvents";
import { Conversation } from "./Conversation";

describe("tool calls in the conversation", () => {
  it("shows a tool_call event as a line between the question and the answer", () => {
    const events = [
      { type: "transcript", text: "What is the door code?", final: true },
      { type: "tool_call", name: "door_code", arguments: "{}", result: "4 7 1 9", ok: true, latency_ms: 12.4 },
      { type: "tool_call", name: "weather", arguments: '{"city": "Zorbl"}', result: "Error: offline", ok: false, latency_ms: 3 },
      { type: "ai_response", text: "The code is 4719.", final: true },
    ];
    const state = events.reduce((s, e) => {
      const action = eventToAction(e as Parameters<typeof eventToAction>[0]);
      return action ? agentReducer(s, action) : s;
    }, initialAgentState);
    expect(state.history.map((h) => h.role)).toEqual(["user", "tool", "tool", "agent"]);
    render(
      <Conversation history={state.history} transcript="" interimTranscript="" aiResponse="" processing="idle" />,
    );
    const tools = screen.getByTestId("history").querySelectorAll('[data-role="tool"]');
    expect(tools).toHaveLength(2);
    expect(within(tools[0] as HTMLElement).getByText("door_code() → 4 7 1 9")).toBeTruthy();
    expect(within(tools[0] as HTMLElement).getByText("12 ms")).toBeTruthy();
    expect(within(tools[1] as HTMLElement).getByText('weather({"city": "Zorbl"}) → Error: offline')).toBeTruthy();
    expect(within(tools[1] as HTMLElement).getByText("failed")).toBeTruthy();
  });
});
