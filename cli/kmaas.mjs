#!/usr/bin/env node
// The `kmaas` executable: registers tsx so that Node can load the TypeScript sources, then runs
// the CLI. The import must be dynamic, so that it happens after the loader is registered.
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
