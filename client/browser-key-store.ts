/**
 * Where the browser login keeps its DPoP key pair: IndexedDB. A CryptoKey is structured-cloneable,
 * so IndexedDB stores the key object itself and gives it back after a reload still marked
 * non-extractable: script on the page can sign with the private key but never read it, and
 * nothing else (sessionStorage, a cookie) ever holds key material. Each sign-in has its own
 * record (named by an id the tab keeps in sessionStorage), so that signing in in one tab does not
 * take the key from under another tab's session.
 *
 * Known shortcoming: the key of a tab closed while signed in (its sessionStorage gone, logout
 * never called) stays in IndexedDB, unusable (its token is gone with the tab) but not deleted.
 */
import { KmaasError } from '../shared/errors.ts';

const DB_NAME = 'kmaas-sdk';
const STORE = 'keys';

function idb(): IDBFactory {
  const factory = globalThis.indexedDB as IDBFactory | undefined;
  if (!factory) throw new KmaasError('ERR_CONFIG', 'IndexedDB is not available in this context');
  return factory;
}

function done<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error('IndexedDB request failed'));
  });
}

async function open(): Promise<IDBDatabase> {
  const req = idb().open(DB_NAME, 1);
  req.onupgradeneeded = () => req.result.createObjectStore(STORE);
  return done(req);
}

async function withStore<T>(
  mode: IDBTransactionMode,
  run: (store: IDBObjectStore) => IDBRequest<T>,
): Promise<T> {
  const db = await open();
  try {
    const tx = db.transaction(STORE, mode);
    const result = await done(run(tx.objectStore(STORE)));
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
      tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
    });
    return result;
  } finally {
    db.close();
  }
}

export async function saveDpopKey(id: string, key: CryptoKeyPair): Promise<void> {
  await withStore('readwrite', (s) => s.put(key, `dpop:${id}`));
}

export async function loadDpopKey(id: string): Promise<CryptoKeyPair | undefined> {
  const value = (await withStore('readonly', (s) => s.get(`dpop:${id}`))) as unknown;
  const pair = value as Partial<CryptoKeyPair> | undefined;
  return pair?.privateKey instanceof CryptoKey && pair.publicKey instanceof CryptoKey
    ? { privateKey: pair.privateKey, publicKey: pair.publicKey }
    : undefined;
}

export async function deleteDpopKey(id: string): Promise<void> {
  await withStore('readwrite', (s) => s.delete(`dpop:${id}`));
}
