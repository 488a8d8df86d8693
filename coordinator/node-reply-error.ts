/** The error a share node answered with (as opposed to the link failing to get an answer). */
import { KmaasError, type ErrorBody } from '../shared/errors.ts';

/** A node answered, and its answer was an error: the node is alive, and this is what it said. */
export class NodeReplyError extends KmaasError {
  readonly node: number;

  constructor(node: number, body: ErrorBody) {
    const e = KmaasError.fromBody(body);
    super(e.code, e.message, e.details);
    this.node = node;
  }
}
