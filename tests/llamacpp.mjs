// Times llama.cpp through node-llama-cpp's prebuilt libraries on a GGUF file: a prompt of P token ids, then
// G tokens decoded greedily (each one's logits computed, as in a chat). Prints one line in run's format.
//   node tests/llamacpp.mjs MODEL.gguf THREADS P G      (with node-llama-cpp installed: see tests/llamacpp.sh)
import {getLlama} from "node-llama-cpp";

const [model, threads, P, G] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4]),
                                Number(process.argv[5])];
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const loaded = await llama.loadModel({modelPath: model});
const context = await loaded.createContext({contextSize: 1024, threads, batchSize: 512});
const prompt = Array.from({length: P}, (_, i) => 1000 + i);
const start = performance.now(), times = [];
for await (const token of context.getSequence().evaluate(prompt, {temperature: 0})) {
    times.push(performance.now());  // times[0]: the first token, after the prompt
    if (times.length > G) break;
}
const prefill = P / ((times[0] - start) / 1000), decode = G / ((times[G] - times[0]) / 1000);
console.log(`prompt: ${P} tokens, ${prefill.toFixed(2)} tok/s | generated: ${G} tokens, ${decode.toFixed(2)} tok/s`);
process.exit(0);
