// The Vercel AI SDK's default OpenAI model (`openai(model)`, the Responses API) against the
// gateway: generateText, then streamText. Prints one JSON line the test reads.
//   node ai_sdk.mjs BASE_URL KEY MODEL
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });

const generated = await generateText({ model: openai(model), prompt: "hello from the AI SDK" });
const streamed = streamText({ model: openai(model), prompt: "streamed from the AI SDK" });
let deltas = "";
for await (const piece of streamed.textStream) deltas += piece;
console.log(JSON.stringify({
  generate: generated.text,
  generateResponseId: generated.response?.id ?? null,
  stream: await streamed.text,
  deltas,
  usage: await streamed.usage,
  finishReason: await streamed.finishReason,
}));
