/**
 * A verify worker's entry (coordinator/verify-pool.ts): tells the pool it is ready, then checks
 * one node answer per message and posts the result back under the message's id.
 *
 *   pool -> worker  { id, task: VerifyTask }
 *   worker -> pool  { ready: true } once, then { id, result: VerifyResult } per task
 */
import { parentPort } from 'node:worker_threads';
import { verifyAnswer, type VerifyTask } from './verify-answer.ts';

const port = parentPort;
if (!port) throw new Error('verify-worker.ts runs only as a worker thread');

port.on('message', (message: { id: number; task: VerifyTask }) => {
  port.postMessage({ id: message.id, result: verifyAnswer(message.task) });
});
port.postMessage({ ready: true });
