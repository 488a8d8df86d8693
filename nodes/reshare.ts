/**
 * Resharing handlers (placeholder for the lead's branch base; helper A replaces this file).
 */
import { KmaasError } from '../shared/errors.ts';

function pending(type: string): never {
  throw new KmaasError('ERR_UNKNOWN_MESSAGE', `${type} is not handled yet`, { type });
}

export const reshareHandlers = {
  'reshare.begin': () => pending('reshare.begin'),
  'reshare.deal': () => pending('reshare.deal'),
  'reshare.prepare': () => pending('reshare.prepare'),
  'reshare.vote': () => pending('reshare.vote'),
  'reshare.commit': () => pending('reshare.commit'),
  'reshare.finish': () => pending('reshare.finish'),
  'reshare.abort': () => pending('reshare.abort'),
};
