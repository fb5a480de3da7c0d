//! A reference-counted interner: values that repeat across many entries (namespaces,
//! service accounts, IPv6 node IPs) are stored once and referred to by a 4-byte handle.
//! Values are freed when their last user releases them, so the interner never holds
//! more than what the view references (node IPs churn in autoscaled clusters).

use std::borrow::Borrow;
use std::hash::Hash;
use std::num::NonZeroU32;

use foldhash::HashMap;

/// A handle to an interned value. `Option<Sym>` is still 4 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Sym(NonZeroU32);

impl Sym {
    fn at(index: usize) -> Self {
        // Every live handle is held by an entry of the view that is far larger than 4
        // bytes, so 2^32 handles would need hundreds of gigabytes first.
        let index = u32::try_from(index).expect("fewer than 2^32 interned values");
        Self(NonZeroU32::MIN.saturating_add(index))
    }

    fn index(self) -> usize {
        // u32 → usize never truncates on the targets we build for (32 and 64 bits).
        (self.0.get() - 1) as usize
    }
}

struct Interned<T> {
    value: T,
    refs: u32,
}

/// Interns values of type `T`; look-ups borrow (`&str` for `Arc<str>`).
pub(super) struct Interner<T> {
    values: Vec<Option<Interned<T>>>,
    index: HashMap<T, Sym>,
    free: Vec<Sym>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            index: HashMap::default(),
            free: Vec::new(),
        }
    }
}

impl<T: Clone + Hash + Eq> Interner<T> {
    /// The handle of `key`, adding it if new; every call must be paired with one
    /// [`release`](Self::release) of the returned handle.
    pub fn intern<Q>(&mut self, key: &Q) -> Sym
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ToOwned + ?Sized,
        Q::Owned: Into<T>,
    {
        if let Some(&sym) = self.index.get(key)
            && let Some(Some(entry)) = self.values.get_mut(sym.index())
        {
            entry.refs += 1;
            return sym;
        }
        let value: T = key.to_owned().into();
        let entry = Interned {
            value: value.clone(),
            refs: 1,
        };
        let sym = match self.free.pop() {
            Some(sym) => {
                self.values[sym.index()] = Some(entry);
                sym
            }
            None => {
                self.values.push(Some(entry));
                Sym::at(self.values.len() - 1)
            }
        };
        self.index.insert(value, sym);
        sym
    }

    /// The value behind a handle; `None` only for a handle already fully released.
    pub fn get(&self, sym: Sym) -> Option<&T> {
        self.values
            .get(sym.index())
            .and_then(Option::as_ref)
            .map(|e| &e.value)
    }

    /// Drops one reference; the value is freed with its last one.
    pub fn release(&mut self, sym: Sym) {
        let Some(slot) = self.values.get_mut(sym.index()) else {
            return;
        };
        let Some(entry) = slot else {
            return;
        };
        entry.refs -= 1;
        if entry.refs == 0 {
            if let Some(entry) = slot.take() {
                self.index.remove(&entry.value);
            }
            self.free.push(sym);
        }
    }

    /// What an entry whose value was `old` holds once its value is `new`: `old` itself
    /// when it already names `new` (an update that leaves a field alone then costs a
    /// comparison, not a look-up and a release), else `new` interned and `old` released.
    pub fn replace<Q>(&mut self, old: Option<Sym>, new: Option<&Q>) -> Option<Sym>
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ToOwned + ?Sized,
        Q::Owned: Into<T>,
    {
        if let (Some(sym), Some(value)) = (old, new)
            && self.get(sym).map(Borrow::borrow) == Some(value)
        {
            return old;
        }
        // Interned before the release, so that a value both share is not dropped and
        // made again.
        let interned = new.map(|value| self.intern(value));
        if let Some(sym) = old {
            self.release(sym);
        }
        interned
    }

    /// How many distinct values are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_replace_keeps_an_equal_value_and_swaps_a_different_one() {
        let mut names: Interner<Arc<str>> = Interner::default();
        let a = names.intern("a");
        assert_eq!(names.replace(Some(a), Some("a")), Some(a));
        let b = names.replace(Some(a), Some("b")).unwrap();
        assert_eq!(names.get(b).map(|s| &**s), Some("b"));
        // "a" had one reference, given back by the swap.
        assert_eq!(names.len(), 1);
        assert_eq!(names.replace::<str>(Some(b), None), None);
        assert_eq!(names.len(), 0);
        let c = names.replace(None, Some("c")).unwrap();
        assert_eq!(names.get(c).map(|s| &**s), Some("c"));
    }

    #[test]
    fn equal_values_share_a_handle_until_the_last_release() {
        let mut names: Interner<Arc<str>> = Interner::default();
        let a = names.intern("default");
        let b = names.intern("default");
        let c = names.intern("kube-system");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(names.len(), 2);

        names.release(a);
        assert_eq!(names.get(b).map(|s| &**s), Some("default"));
        names.release(b);
        assert_eq!(names.get(b), None);
        assert_eq!(names.len(), 1);

        // The freed slot is reused, and the old value is not found under its name.
        let d = names.intern("monitoring");
        assert_eq!(d, a);
        assert_eq!(names.get(d).map(|s| &**s), Some("monitoring"));
        assert_eq!(names.get(c).map(|s| &**s), Some("kube-system"));
    }

    #[test]
    fn handles_stay_small() {
        assert_eq!(std::mem::size_of::<Option<Sym>>(), 4);
    }
}
